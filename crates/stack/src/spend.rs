//! What agent loops may spend: `[spend]` (caps for the whole project, and the calendar
//! their days and months follow) and the same caps on each `[loops.NAME]`. The figures come
//! from the agent's own result (`output_format = "json"` or `"stream-json"`), in the
//! currency the agent reports (Claude Code: US dollars).
//!
//! ```toml
//! [spend]
//! max_cost_per_day = 20.0          # every loop of the project together
//! max_cost_per_month = 300.0
//! time_zone = "Europe/Paris"       # the days and months of the caps (default: UTC)
//!
//! [loops.ralph]
//! output_format = "stream-json"    # claude -p … --output-format stream-json
//! max_cost_per_day = 5.0
//! max_tokens_per_day = 20_000_000  # for a subscription, where the dollar figure is notional
//! ```

use jiff::tz::{Offset, TimeZone};
use serde::Deserialize;

/// The four caps, of one loop or of the whole project.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Caps {
    pub cost_per_day: Option<f64>,
    pub cost_per_month: Option<f64>,
    pub tokens_per_day: Option<u64>,
    pub tokens_per_month: Option<u64>,
}

impl Caps {
    pub fn is_empty(&self) -> bool {
        *self == Caps::default()
    }

    /// `at` names the section (`loops.ralph`, `spend`) in the error.
    pub(crate) fn validate(&self, at: &str) -> Result<(), String> {
        for (key, v) in [
            ("max_cost_per_day", self.cost_per_day),
            ("max_cost_per_month", self.cost_per_month),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v > 0.0)
            {
                return Err(format!(
                    "{at}.{key} = {v}: give a positive amount (for example 5.0), or leave it out for no cap"
                ));
            }
        }
        for (key, v) in [
            ("max_tokens_per_day", self.tokens_per_day),
            ("max_tokens_per_month", self.tokens_per_month),
        ] {
            if v == Some(0) {
                return Err(format!(
                    "{at}.{key} = 0: give a positive number of tokens, or leave it out for no cap"
                ));
            }
        }
        Ok(())
    }
}

/// `[spend]`: the project's caps over all its loops, and the calendar of every cap.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpendSection {
    pub max_cost_per_day: Option<f64>,
    pub max_cost_per_month: Option<f64>,
    pub max_tokens_per_day: Option<u64>,
    pub max_tokens_per_month: Option<u64>,
    /// An IANA time zone (`Europe/Paris`) or a fixed offset from UTC (`+05:30`): a day's
    /// cap resets at midnight there, a month's on the first. Default: UTC.
    pub time_zone: Option<String>,
}

impl SpendSection {
    pub fn caps(&self) -> Caps {
        Caps {
            cost_per_day: self.max_cost_per_day,
            cost_per_month: self.max_cost_per_month,
            tokens_per_day: self.max_tokens_per_day,
            tokens_per_month: self.max_tokens_per_month,
        }
    }

    /// The calendar of the caps (UTC unless `time_zone` says otherwise).
    pub fn zone(&self) -> Result<TimeZone, String> {
        match &self.time_zone {
            None => Ok(TimeZone::UTC),
            Some(z) => parse_zone(z),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        self.caps().validate("spend")?;
        self.zone().map(|_| ())
    }
}

/// An IANA name, `UTC`, or a fixed offset `±HH[:MM[:SS]]`.
pub fn parse_zone(z: &str) -> Result<TimeZone, String> {
    let bad = |why: &str| {
        format!(
            "spend.time_zone = `{z}`: {why}; use an IANA name (`Europe/Paris`, `America/New_York`), `UTC`, or a fixed offset such as `+05:30`"
        )
    };
    if let Some(rest) = z
        .strip_prefix('+')
        .map(|r| (1, r))
        .or(z.strip_prefix('-').map(|r| (-1, r)))
    {
        let (sign, digits) = rest;
        let parts: Vec<&str> = digits.split(':').collect();
        let nums: Option<Vec<i32>> = parts
            .iter()
            .map(|p| {
                (p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| p.parse().ok())
                    .flatten()
            })
            .collect();
        let Some(nums) = nums.filter(|n| (1..=3).contains(&n.len())) else {
            return Err(bad("not an offset"));
        };
        let (h, m, s) = (
            nums[0],
            *nums.get(1).unwrap_or(&0),
            *nums.get(2).unwrap_or(&0),
        );
        if h > 25 || m > 59 || s > 59 {
            return Err(bad("the offset is out of range"));
        }
        let secs = sign * (h * 3600 + m * 60 + s);
        return Offset::from_seconds(secs)
            .map(TimeZone::fixed)
            .map_err(|_| bad("the offset is out of range"));
    }
    TimeZone::get(z).map_err(|_| bad("this machine's time zone database does not know it"))
}

/// The day and the month that contain an instant, each as `[start, end)` in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Periods {
    pub day: (i64, i64),
    pub month: (i64, i64),
}

/// The periods of the caps at `now` (Unix seconds) in `zone`; `None` only for an instant
/// outside the calendar's range.
pub fn periods(now: i64, zone: &TimeZone) -> Option<Periods> {
    let t = jiff::Timestamp::from_second(now).ok()?;
    let z = t.to_zoned(zone.clone());
    let day = z.start_of_day().ok()?;
    let next_day = z.tomorrow().ok()?.start_of_day().ok()?;
    let month = z.first_of_month().ok()?.start_of_day().ok()?;
    let next_month = z
        .last_of_month()
        .ok()?
        .tomorrow()
        .ok()?
        .start_of_day()
        .ok()?;
    let s = |z: &jiff::Zoned| z.timestamp().as_second();
    Some(Periods {
        day: (s(&day), s(&next_day)),
        month: (s(&month), s(&next_month)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_months_follow_the_zone() {
        // 2026-12-03T23:30:00Z
        let now = 1_796_340_600;
        let utc = periods(now, &TimeZone::UTC).unwrap();
        assert_eq!(utc.day, (1_796_256_000, 1_796_342_400));
        assert_eq!(utc.month, (1_796_083_200, 1_798_761_600)); // Dec 1 – Jan 1
        // in Paris it is already the 4th
        let paris = periods(now, &parse_zone("Europe/Paris").unwrap()).unwrap();
        assert_eq!(paris.day, (1_796_338_800, 1_796_425_200));
        // a fixed offset, to the second
        let odd = periods(now, &parse_zone("-00:00:30").unwrap()).unwrap();
        assert_eq!(odd.day.1, 1_796_342_430);
    }

    #[test]
    fn a_day_of_daylight_saving_is_23_or_25_hours() {
        let ny = parse_zone("America/New_York").unwrap();
        // 2026-03-08, the spring-forward day: noon local
        let p = periods(1_772_989_200, &ny).unwrap();
        assert_eq!(p.day.1 - p.day.0, 23 * 3600);
    }

    #[test]
    fn bad_zones_and_caps_say_what_to_write() {
        for z in ["Mars/Olympus", "+5", "+05:3", "+26:00", "05:00", ""] {
            let e = parse_zone(z).unwrap_err();
            assert!(
                e.contains("spend.time_zone") && e.contains("Europe/Paris"),
                "{e}"
            );
        }
        assert!(parse_zone("UTC").is_ok() && parse_zone("+05:30").is_ok());
        let caps = Caps {
            cost_per_day: Some(f64::NAN),
            ..Default::default()
        };
        assert!(
            caps.validate("loops.r")
                .unwrap_err()
                .contains("loops.r.max_cost_per_day")
        );
        let caps = Caps {
            cost_per_month: Some(-1.0),
            ..Default::default()
        };
        assert!(caps.validate("spend").is_err());
        let caps = Caps {
            tokens_per_day: Some(0),
            ..Default::default()
        };
        assert!(caps.validate("spend").is_err());
    }
}
