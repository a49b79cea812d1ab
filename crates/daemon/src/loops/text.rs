//! Reading an agent's words: the completion file, a usage limit's reset time, what makes
//! two errors the same; and durations as people say them.

/// `Some(true)` when every object in the JSON that has a `passes` field has
/// `"passes": true` (and there is at least one); `None` when it is not JSON.
pub fn all_pass(data: &[u8]) -> Option<bool> {
    fn walk(v: &serde_json::Value, seen: &mut usize, failing: &mut usize) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(p) = m.get("passes") {
                    *seen += 1;
                    if p != &serde_json::Value::Bool(true) {
                        *failing += 1;
                    }
                }
                m.values().for_each(|v| walk(v, seen, failing));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, seen, failing)),
            _ => {}
        }
    }
    let v: serde_json::Value = serde_json::from_slice(data).ok()?;
    let (mut seen, mut failing) = (0, 0);
    walk(&v, &mut seen, &mut failing);
    Some(seen > 0 && failing == 0)
}

/// The reset time a usage-limit message names: a Unix time after `|` (Claude Code's
/// `usage limit reached|1732406400`), `in N minutes/hours`, or `resets at 3pm` / `15:30`
/// (read as UTC unless the output says otherwise; the next such time).
pub fn reset_time(text: &str, now: i64) -> Option<i64> {
    let epoch = regex::Regex::new(r"\|(\d{10})\b").ok()?;
    if let Some(c) = epoch.captures_iter(text).last() {
        return c[1].parse().ok();
    }
    let rel = regex::Regex::new(
        r"(?i)\bin\s+(\d+)\s*(seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h)\b",
    )
    .ok()?;
    if let Some(c) = rel.captures_iter(text).last() {
        let n: i64 = c[1].parse().ok()?;
        let unit = c[2].to_ascii_lowercase();
        let secs = if unit.starts_with('h') {
            n * 3600
        } else if unit.starts_with('m') {
            n * 60
        } else {
            n
        };
        return Some(now + secs);
    }
    let at =
        regex::Regex::new(r"(?i)\bresets?\s+(?:at\s+)?(\d{1,2})(?::(\d{2}))?\s*(am|pm)?").ok()?;
    if let Some(c) = at.captures_iter(text).last() {
        let mut hour: i64 = c[1].parse().ok()?;
        let minute: i64 = c.get(2).and_then(|m| m.as_str().parse().ok()).unwrap_or(0);
        match c.get(3).map(|m| m.as_str().to_ascii_lowercase()) {
            Some(ap) if ap == "pm" && hour < 12 => hour += 12,
            Some(ap) if ap == "am" && hour == 12 => hour = 0,
            None if c.get(2).is_none() => return None, // a bare number is not a time
            _ => {}
        }
        if hour > 23 || minute > 59 {
            return None;
        }
        let day = now - now.rem_euclid(86400);
        let mut t = day + hour * 3600 + minute * 60;
        if t <= now {
            t += 86400;
        }
        return Some(t);
    }
    None
}

/// What makes two errors "the same": the outcome, the exit code and the last line of
/// output that reads as an error (else the last line), with numbers left out (timestamps,
/// counters and ids differ between runs). stdout and stderr arrive through separate pipes,
/// so which of them ends the output is not reliable; the error line is.
pub fn error_signature(outcome: &str, code: Option<i64>, text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let erring = |l: &&&str| {
        let l = l.to_ascii_lowercase();
        ["error", "fail", "exception", "panic", "fatal"]
            .iter()
            .any(|w| l.contains(w))
    };
    let last = lines
        .iter()
        .rev()
        .find(erring)
        .or(lines.last())
        .copied()
        .unwrap_or("");
    let digits = regex::Regex::new(r"\d+").map(|re| re.replace_all(last, "N").to_string());
    let line: String = digits
        .unwrap_or_else(|_| last.to_string())
        .chars()
        .take(200)
        .collect();
    format!(
        "{outcome}{}: {line}",
        code.map(|c| format!(" (exit {c})")).unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prd_completion() {
        let prd = br#"{"project":"x","userStories":[{"id":"US-1","passes":true},{"id":"US-2","passes":false}]}"#;
        assert_eq!(all_pass(prd), Some(false));
        let done = br#"{"userStories":[{"id":"US-1","passes":true},{"id":"US-2","passes":true}]}"#;
        assert_eq!(all_pass(done), Some(true));
        assert_eq!(all_pass(br#"{"stories":[]}"#), Some(false));
        assert_eq!(all_pass(b"not json"), None);
    }

    #[test]
    fn reset_times() {
        let now = 1_795_465_867; // 2026-11-23T20:31:07Z
        assert_eq!(
            reset_time("Claude AI usage limit reached|1795470000", now),
            Some(1_795_470_000)
        );
        assert_eq!(
            reset_time("usage limit reached, try again in 2 hours", now),
            Some(now + 7200)
        );
        assert_eq!(reset_time("limit; retry in 15 min", now), Some(now + 900));
        // 23:00 UTC the same day
        assert_eq!(
            reset_time("You've hit your limit · resets 11pm (UTC)", now),
            Some(1_795_474_800)
        );
        // 3am: tomorrow
        assert_eq!(reset_time("resets at 3am", now), Some(1_795_489_200));
        assert_eq!(reset_time("resets at 21:30", now), Some(1_795_469_400));
        assert_eq!(reset_time("usage limit reached", now), None);
    }

    #[test]
    fn error_signatures_ignore_numbers() {
        let a = error_signature("error", Some(1), "x\nError: request 1234 failed at 12:01\n");
        let b = error_signature("error", Some(1), "y\nError: request 98 failed at 13:44\n\n");
        assert_eq!(a, b);
        assert_ne!(
            a,
            error_signature("error", Some(2), "Error: request 1 failed at 1:1")
        );
        assert_ne!(a, error_signature("error", Some(1), "Error: disk full"));
        // the error line counts, wherever stdout's last line landed
        assert_eq!(
            error_signature("error", Some(3), "Error: build failed at 4\nstarting\n"),
            error_signature("error", Some(3), "starting\nError: build failed at 5\n")
        );
    }
}
