//! The agent's own result: the JSON object Claude Code (and agents like it) prints last
//! with `--output-format json` or `stream-json`. Read from the last line of the
//! iteration's standard output and checked field by field; anything doubtful (a truncated
//! or malformed line, another kind of object, a negative, non-finite or absurd figure) is
//! no result, with a note saying why, so a bad number can neither crash the daemon nor
//! slip past a cap.

use homebase_proto::AgentResult;
use serde::Deserialize;

/// The longest result line read (a result carries the agent's final message).
pub const MAX_LINE: usize = 1 << 20;
/// A cost above this for one iteration is taken for a bad figure, not a bill.
pub const MAX_COST: f64 = 1000.0;
/// Tokens above this for one iteration are taken for a bad figure.
pub const MAX_TOKENS: u64 = 10_000_000_000;
/// The longest session id kept.
const MAX_SESSION_ID: usize = 128;

/// Follows a stream of standard output to its last non-blank line, keeping at most
/// [`MAX_LINE`] bytes of a line (and saying when one was longer).
#[derive(Debug, Default)]
pub struct LastLine {
    current: Vec<u8>,
    current_long: bool,
    last: Vec<u8>,
    last_long: bool,
}

/// The last non-blank line of an output, or why there is none to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    Line(Vec<u8>),
    /// The last line was longer than [`MAX_LINE`].
    TooLong,
    /// Nothing but blank lines.
    Empty,
}

impl LastLine {
    pub fn feed(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        loop {
            match rest.iter().position(|b| *b == b'\n') {
                Some(nl) => {
                    self.push(&rest[..nl]);
                    self.end_line();
                    rest = &rest[nl + 1..];
                }
                None => {
                    self.push(rest);
                    return;
                }
            }
        }
    }

    fn push(&mut self, part: &[u8]) {
        if self.current.len() + part.len() > MAX_LINE {
            self.current_long = true;
            self.current.clear();
        } else if !self.current_long {
            self.current.extend_from_slice(part);
        }
    }

    fn end_line(&mut self) {
        if self.current_long || !self.current.trim_ascii().is_empty() {
            self.last = std::mem::take(&mut self.current);
            self.last_long = self.current_long;
        }
        self.current.clear();
        self.current_long = false;
    }

    pub fn finish(mut self) -> Ending {
        self.end_line();
        if self.last_long {
            Ending::TooLong
        } else if self.last.trim_ascii().is_empty() {
            Ending::Empty
        } else {
            Ending::Line(self.last)
        }
    }
}

/// A result as read, with the agent's final text (for a usage limit's reset time and the
/// error's signature).
#[derive(Debug, Clone, PartialEq)]
pub struct Read {
    pub result: AgentResult,
    pub text: String,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    subtype: Option<String>,
    #[serde(default)]
    is_error: Option<bool>,
    #[serde(default)]
    total_cost_usd: Option<f64>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    num_turns: Option<u64>,
    #[serde(default)]
    duration_ms: Option<u64>,
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default)]
    result: Option<String>,
}

#[derive(Deserialize, Default)]
struct Usage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    cache_creation_input_tokens: u64,
    #[serde(default)]
    cache_read_input_tokens: u64,
}

/// Reads the result from the end of an output; `Err` says why there is none.
pub fn read(ending: &Ending) -> Result<Read, String> {
    let line = match ending {
        Ending::Line(l) => l,
        Ending::TooLong => {
            return Err(format!(
                "no result: the last line of the output is over {} MiB",
                MAX_LINE >> 20
            ));
        }
        Ending::Empty => return Err("no result: the agent printed nothing on stdout".into()),
    };
    let line = line.trim_ascii();
    if !line.starts_with(b"{") {
        return Err("no result: the last line of the output is not JSON".into());
    }
    let raw: Raw = serde_json::from_slice(line).map_err(|e| {
        if e.is_eof() {
            "no result: the last line is a truncated JSON object".to_string()
        } else {
            format!("no result: the last line is not a valid result object ({e})")
        }
    })?;
    if raw.kind != "result" {
        return Err(format!(
            "no result: the last line is a JSON object of type `{}`, not `result`",
            printable(&raw.kind, 40)
        ));
    }
    if let Some(c) = raw.total_cost_usd
        && !(c.is_finite() && (0.0..=MAX_COST).contains(&c))
    {
        return Err(format!(
            "no result: its cost ({c}) is negative, not a number or above {MAX_COST} for one iteration"
        ));
    }
    let usage = raw.usage.unwrap_or_default();
    let result = AgentResult {
        subtype: printable(raw.subtype.as_deref().unwrap_or(""), 64),
        is_error: raw.is_error.unwrap_or(false),
        cost_usd: raw.total_cost_usd,
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
        cache_creation_tokens: usage.cache_creation_input_tokens,
        cache_read_tokens: usage.cache_read_input_tokens,
        turns: raw.num_turns,
        duration_ms: raw.duration_ms,
        session_id: raw
            .session_id
            .filter(|s| {
                s.len() <= MAX_SESSION_ID
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
            })
            .filter(|s| !s.is_empty()),
    };
    // each count is bounded, so their sum cannot wrap
    if [
        result.input_tokens,
        result.output_tokens,
        result.cache_creation_tokens,
        result.cache_read_tokens,
    ]
    .iter()
    .any(|t| *t > MAX_TOKENS)
    {
        return Err(format!(
            "no result: a token count is above {MAX_TOKENS} for one iteration"
        ));
    }
    Ok(Read {
        result,
        text: raw.result.unwrap_or_default(),
    })
}

/// What the agent's result says of the iteration, for [`super::outcome::classify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Said {
    /// No result: the exit code and the text patterns decide.
    Nothing {
        usage_limit: bool,
    },
    Success,
    /// It stopped at its maximum number of turns.
    MaxTurns,
    UsageLimit,
    Error,
}

/// The result's verdict: an error naming a usage limit (its text matches `usage`), the
/// turn limit, another error, or success.
pub fn said(r: &Read, usage: Option<&regex::Regex>) -> Said {
    let sub = r.result.subtype.as_str();
    let limit = usage.is_some_and(|re| re.is_match(&r.text));
    if (r.result.is_error || sub.starts_with("error")) && limit {
        Said::UsageLimit
    } else if sub == "error_max_turns" {
        Said::MaxTurns
    } else if r.result.is_error || sub.starts_with("error") {
        Said::Error
    } else {
        Said::Success
    }
}

/// The agent's words, cut to `max` characters with controls dropped (they reach notes and
/// terminals).
fn printable(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ending(out: &str) -> Ending {
        let mut l = LastLine::default();
        // fed in small pieces: lines cross chunk borders
        for piece in out.as_bytes().chunks(7) {
            l.feed(piece);
        }
        l.finish()
    }

    const SUCCESS: &str = r#"{"type":"result","subtype":"success","is_error":false,"duration_ms":48123,"duration_api_ms":45000,"num_turns":12,"result":"Done: story 3 passes.","session_id":"9f3c2a1e-5b7d-4c8e-a1f2-0123456789ab","total_cost_usd":0.4213,"usage":{"input_tokens":1520,"cache_creation_input_tokens":20456,"cache_read_input_tokens":301220,"output_tokens":3911,"server_tool_use":{"web_search_requests":0},"service_tier":"standard"}}"#;

    #[test]
    fn a_claude_result_is_read_whole() {
        let r = read(&ending(&format!("{SUCCESS}\n"))).unwrap();
        assert_eq!(r.result.subtype, "success");
        assert_eq!(r.result.cost_usd, Some(0.4213));
        assert_eq!(
            (r.result.input_tokens, r.result.output_tokens),
            (1520, 3911)
        );
        assert_eq!(
            (r.result.cache_creation_tokens, r.result.cache_read_tokens),
            (20456, 301220)
        );
        assert_eq!(r.result.tokens(), 1520 + 3911 + 20456 + 301220);
        assert_eq!(r.result.turns, Some(12));
        assert_eq!(
            r.result.session_id.as_deref(),
            Some("9f3c2a1e-5b7d-4c8e-a1f2-0123456789ab")
        );
        assert_eq!(r.text, "Done: story 3 passes.");
        assert_eq!(said(&r, None), Said::Success);
    }

    #[test]
    fn stream_json_ends_with_the_result_and_blank_lines_do_not_count() {
        let out = format!(
            "{{\"type\":\"system\",\"subtype\":\"init\"}}\n{{\"type\":\"assistant\",\"message\":{{}}}}\n{SUCCESS}\n\n  \n"
        );
        assert_eq!(read(&ending(&out)).unwrap().result.turns, Some(12));
    }

    #[test]
    fn verdicts_come_from_the_fields() {
        let re = regex::Regex::new(homebase_stack::loops::DEFAULT_USAGE_LIMIT_PATTERN).unwrap();
        let with = |sub: &str, err: bool, text: &str| {
            let line = format!(
                r#"{{"type":"result","subtype":"{sub}","is_error":{err},"result":"{text}","total_cost_usd":0.01}}"#
            );
            said(&read(&Ending::Line(line.into_bytes())).unwrap(), Some(&re))
        };
        assert_eq!(with("error_max_turns", true, ""), Said::MaxTurns);
        assert_eq!(with("success", true, "API Error: 500"), Said::Error);
        assert_eq!(with("error_during_execution", false, ""), Said::Error);
        assert_eq!(
            with("success", true, "Claude AI usage limit reached|1795470000"),
            Said::UsageLimit
        );
        // the words in a successful answer are not a limit (the grep bug)
        assert_eq!(
            with(
                "success",
                false,
                "I documented the usage limit reached error"
            ),
            Said::Success
        );
    }

    #[test]
    fn bad_endings_are_no_result_with_the_reason() {
        let cases = [
            ("", "printed nothing"),
            ("Done.\n", "not JSON"),
            (&SUCCESS[..SUCCESS.len() / 2], "truncated"),
            (
                r#"{"type":"assistant","message":{}}"#,
                "of type `assistant`",
            ),
            (
                r#"{"type":"result","total_cost_usd":-0.5}"#,
                "negative, not a number",
            ),
            (r#"{"type":"result","total_cost_usd":1e308}"#, "above 1000"),
            (
                r#"{"type":"result","total_cost_usd":"0.5"}"#,
                "not a valid result",
            ),
            (
                r#"{"type":"result","usage":{"input_tokens":-3}}"#,
                "not a valid result",
            ),
            (
                r#"{"type":"result","usage":{"output_tokens":99999999999}}"#,
                "token count",
            ),
            (
                r#"{"type":"result","total_cost_usd":1e999}"#,
                "not a valid result",
            ),
        ];
        for (out, why) in cases {
            let e = read(&ending(out)).unwrap_err();
            assert!(e.starts_with("no result") && e.contains(why), "{out}: {e}");
        }
        // a JSON result followed by more text is not the end of the output
        let e = read(&ending(&format!("{SUCCESS}\nbye\n"))).unwrap_err();
        assert!(e.contains("not JSON"), "{e}");
    }

    #[test]
    fn a_huge_line_is_dropped_not_kept() {
        let mut l = LastLine::default();
        l.feed(b"{\"type\":\"result\",\"result\":\"");
        let block = vec![b'x'; 64 * 1024];
        for _ in 0..20 {
            l.feed(&block);
        }
        assert!(l.current.is_empty() && l.current_long);
        l.feed(b"\"}\n");
        assert_eq!(l.finish(), Ending::TooLong);
        // a long line followed by a short one: the short one is the end
        let mut l = LastLine::default();
        for _ in 0..20 {
            l.feed(&block);
        }
        l.feed(format!("\n{SUCCESS}\n").as_bytes());
        assert!(read(&l.finish()).is_ok());
    }

    #[test]
    fn an_odd_session_id_is_dropped() {
        let line = r#"{"type":"result","subtype":"success\u001b[2J","session_id":"x\u001b]0;pwned\u0007"}"#;
        let r = read(&Ending::Line(line.as_bytes().to_vec())).unwrap();
        assert_eq!(r.result.session_id, None);
        assert_eq!(r.result.subtype, "success[2J");
    }
}
