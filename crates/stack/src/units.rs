//! Memory sizes as Compose and Docker write them, and back.
//!
//! Docker's `RAMInBytes` accepts an integer or a decimal followed by an optional unit letter
//! (b, k, m, g, t, p), an optional `i` and an optional `b`, case-insensitive, all binary
//! (`1g` = `1GB` = `1GiB` = 1024³). homebase.toml uses the same grammar.

use std::fmt;

/// A number of bytes of memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Bytes(pub u64);

const UNITS: [(char, u64); 7] = [
    ('b', 1),
    ('k', 1 << 10),
    ('m', 1 << 20),
    ('g', 1 << 30),
    ('t', 1 << 40),
    ('p', 1 << 50),
    // not Docker's, but read so that `1EiB` gets the same answer as its value in bytes
    ('e', 1 << 60),
];

/// Why a memory size could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid memory size `{input}`: expected a number with an optional unit such as `512m`, `1.5g` or `2GiB`"
)]
pub struct ParseBytesError {
    pub input: String,
}

impl Bytes {
    pub const MIB: u64 = 1 << 20;
    pub const GIB: u64 = 1 << 30;

    pub fn parse(input: &str) -> Result<Bytes, ParseBytesError> {
        let err = || ParseBytesError {
            input: input.to_string(),
        };
        let s = input.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        if num.is_empty() || num.starts_with('.') || num.ends_with('.') {
            return Err(err());
        }
        let unit = unit.trim_start().to_ascii_lowercase();
        let mut chars = unit.chars();
        let multiplier = match chars.next() {
            None => 1,
            Some(c) => {
                let m = UNITS
                    .iter()
                    .find(|(u, _)| *u == c)
                    .map(|(_, m)| *m)
                    .ok_or_else(err)?;
                let rest: String = chars.collect();
                let ok = if c == 'b' {
                    rest.is_empty()
                } else {
                    matches!(rest.as_str(), "" | "b" | "i" | "ib")
                };
                if !ok {
                    return Err(err());
                }
                m
            }
        };
        if let Ok(n) = num.parse::<u64>() {
            return n.checked_mul(multiplier).map(Bytes).ok_or_else(err);
        }
        let f: f64 = num.parse().map_err(|_| err())?;
        let v = f * multiplier as f64;
        if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
            return Err(err());
        }
        Ok(Bytes(v as u64))
    }

    pub fn gib(n: f64) -> Bytes {
        Bytes((n * Self::GIB as f64) as u64)
    }

    pub fn mib(n: u64) -> Bytes {
        Bytes(n * Self::MIB)
    }

    /// The shortest exact form Compose accepts (`2g`, `1536m`, or plain bytes).
    pub fn to_compose(self) -> String {
        for (u, m) in UNITS.iter().rev().filter(|(u, _)| *u != 'e') {
            if *m > 1 && self.0 >= *m && self.0.is_multiple_of(*m) {
                return format!("{}{}", self.0 / m, u);
            }
        }
        self.0.to_string()
    }

    /// Whole mebibytes, rounded down (what PostgreSQL and Node.js settings want).
    pub fn as_mib(self) -> u64 {
        self.0 / Self::MIB
    }
}

impl fmt::Display for Bytes {
    /// Human form with binary units: `2 GiB`, `1.5 GiB`, `512 MiB`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0 as f64;
        let (n, unit) = if self.0 >= Self::GIB {
            (v / Self::GIB as f64, "GiB")
        } else if self.0 >= Self::MIB {
            (v / Self::MIB as f64, "MiB")
        } else if self.0 >= 1024 {
            (v / 1024.0, "KiB")
        } else {
            return write!(f, "{} B", self.0);
        };
        let s = format!("{n:.2}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        write!(f, "{s} {unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_compose_accepts() {
        let cases = [
            ("1024", 1024),
            ("512m", 512 << 20),
            ("512M", 512 << 20),
            ("512mb", 512 << 20),
            ("512MB", 512 << 20),
            ("512MiB", 512 << 20),
            ("1g", 1 << 30),
            ("1G", 1 << 30),
            ("1gb", 1 << 30),
            ("1GiB", 1 << 30),
            ("1.5g", 3 << 29),
            ("1.5GiB", 3 << 29),
            ("64k", 64 << 10),
            ("64kb", 64 << 10),
            ("100b", 100),
            ("100B", 100),
            ("2 GiB", 2 << 30),
            ("1t", 1 << 40),
            ("0", 0),
        ];
        for (input, want) in cases {
            assert_eq!(Bytes::parse(input), Ok(Bytes(want)), "{input}");
        }
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "", "g", "1x", "1.g", ".5g", "-1g", "1gg", "1bi", "lots", "1.2.3g",
        ] {
            assert!(Bytes::parse(bad).is_err(), "{bad} should be rejected");
        }
        assert_eq!(
            Bytes::parse("2 gigs").unwrap_err().to_string(),
            "invalid memory size `2 gigs`: expected a number with an optional unit such as `512m`, `1.5g` or `2GiB`"
        );
    }

    #[test]
    fn compose_form_round_trips() {
        for v in [1u64, 1023, 1024, 1536 << 20, 2 << 30, 3 << 29, 1 << 40] {
            let b = Bytes(v);
            assert_eq!(Bytes::parse(&b.to_compose()), Ok(b));
        }
        assert_eq!(Bytes(2 << 30).to_compose(), "2g");
        assert_eq!(Bytes(1536 << 20).to_compose(), "1536m");
    }

    #[test]
    fn displays_human_sizes() {
        assert_eq!(Bytes(2 << 30).to_string(), "2 GiB");
        assert_eq!(Bytes(3 << 29).to_string(), "1.5 GiB");
        assert_eq!(Bytes(512 << 20).to_string(), "512 MiB");
        assert_eq!(Bytes(12 << 10).to_string(), "12 KiB");
    }
}
