//! Calendar arithmetic in UTC, written once for the CLI and the daemon: the stamps in
//! release and backup ids, RFC 3339 times as Docker writes them and as the API serves them
//! (Howard Hinnant's civil-date algorithms; no time zones, no leap seconds).

/// Seconds since the Unix epoch: the one clock of homebase, on the laptop and in the
/// daemon (0 if the system clock is before 1970).
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// [`now`], unsigned (for stamps and ages).
pub fn now_secs() -> u64 {
    now().max(0) as u64
}

/// Days since 1970-01-01 to a proleptic Gregorian date (year, month, day).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A proleptic Gregorian date to days since 1970-01-01.
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The two ways homebase words a span of time, both here: [`human_duration`] for a span
/// that was measured (an age, how long a step took: `3m5s`), [`setting_duration`] for
/// one that was set, in the words a person would set it in (a loop's timeout, its
/// cool-down, its pace: `5 min`).
///
/// A span as people read it at a glance: `42s`, `3m5s`, `2h10m`.
pub fn human_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, s % 3600 / 60),
    }
}

/// A span that was set, in whole units: `30 s`, `5 min`, `90 min`, `2 h` (hours only when
/// whole, minutes from two on).
pub fn setting_duration(secs: u64) -> String {
    if secs >= 3600 && secs.is_multiple_of(3600) {
        format!("{} h", secs / 3600)
    } else if secs >= 120 {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

/// `20261123T213000Z`: sortable, readable, safe in paths (release and backup ids).
pub fn utc_stamp(secs: u64) -> String {
    let (days, rem) = (secs / 86400, secs % 86400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `20261123`: the day of a Unix time, the prefix of that day's backup ids.
pub fn day_stamp(t: i64) -> String {
    let (y, m, d) = civil_from_days(t.div_euclid(86400));
    format!("{y:04}{m:02}{d:02}")
}

/// `2026-11-23T23:10:00Z`.
pub fn rfc3339(t: i64) -> String {
    let (y, m, d) = civil_from_days(t.div_euclid(86400));
    let s = t.rem_euclid(86400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// Seconds since the epoch of an RFC 3339 time as Docker writes it
/// (`2026-11-23T20:31:07.123Z`); fractions and the zone letter are ignored (Docker writes UTC).
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let hms: Vec<i64> = time
        .get(..8)?
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let days = days_from_civil(y, m, day);
    u64::try_from(days * 86400 + hms.first()? * 3600 + hms.get(1)? * 60 + hms.get(2)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_415), (2025, 11, 23));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        for z in [-800_000, -1, 0, 59, 11_016, 20_415, 2_000_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, i64::from(m), i64::from(d)), z);
        }
    }

    #[test]
    fn stamps_and_rfc3339() {
        assert_eq!(utc_stamp(1_795_465_867), "20261123T203107Z");
        assert_eq!(day_stamp(0), "19700101");
        assert_eq!(day_stamp(1_795_465_867), "20261123");
        assert_eq!(rfc3339(1_795_465_867), "2026-11-23T20:31:07Z");
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2026-11-23T20:31:07.123456789Z"),
            Some(1_795_465_867)
        );
        assert_eq!(parse_rfc3339(&rfc3339(1_795_465_867)), Some(1_795_465_867));
        assert_eq!(parse_rfc3339("garbage"), None);
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(setting_duration(30), "30 s");
        assert_eq!(setting_duration(300), "5 min");
        assert_eq!(setting_duration(7200), "2 h");
        assert_eq!(setting_duration(5400), "90 min");
    }
}
