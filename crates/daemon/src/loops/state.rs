//! A loop's run state and its circuit breaker, as types. The store keeps them as text
//! (`as_str`, `parse`); nothing else spells them.

/// Where a loop's run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunState {
    /// Iterating (or waiting at a gate to iterate).
    Active,
    Paused,
    Stopped,
    /// The completion marker or file said the work is done.
    Completed,
    /// `max_iterations` reached without completing.
    Exhausted,
    /// Never started (`autostart = false`), or its state could not be read.
    #[default]
    Idle,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Active => "active",
            RunState::Paused => "paused",
            RunState::Stopped => "stopped",
            RunState::Completed => "completed",
            RunState::Exhausted => "exhausted",
            RunState::Idle => "idle",
        }
    }

    /// The stored word; an unknown one (a newer daemon's) reads as idle, which waits for a
    /// command rather than running.
    pub fn parse(s: &str) -> RunState {
        match s {
            "active" => RunState::Active,
            "paused" => RunState::Paused,
            "stopped" => RunState::Stopped,
            "completed" => RunState::Completed,
            "exhausted" => RunState::Exhausted,
            _ => RunState::Idle,
        }
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The circuit breaker of a run: closed lets iterations through; open holds the loop until
/// the end of its cool-down; then one trial iteration runs half-open, and its result closes
/// the breaker (progress, no error) or opens it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Breaker {
    #[default]
    Closed,
    Open {
        /// The end of the cool-down (Unix seconds).
        until: i64,
    },
    HalfOpen,
}

impl Breaker {
    pub fn as_str(self) -> &'static str {
        match self {
            Breaker::Closed => "closed",
            Breaker::Open { .. } => "open",
            Breaker::HalfOpen => "half_open",
        }
    }

    /// The end of the cool-down, while open.
    pub fn until(self) -> Option<i64> {
        match self {
            Breaker::Open { until } => Some(until),
            _ => None,
        }
    }

    /// From the store's two columns; an open breaker without a time has cooled down.
    pub fn parse(s: &str, until: Option<i64>) -> Breaker {
        match s {
            "open" => Breaker::Open {
                until: until.unwrap_or(0),
            },
            "half_open" => Breaker::HalfOpen,
            _ => Breaker::Closed,
        }
    }

    /// While the cool-down lasts at `now`: its end.
    pub fn cooling(self, now: i64) -> Option<i64> {
        self.until().filter(|u| *u > now)
    }

    /// At an iteration's start: an open breaker (its cool-down over, or the gate would have
    /// held the loop) lets this one iteration through as the trial. True when it did.
    pub fn begin_trial(&mut self) -> bool {
        if matches!(self, Breaker::Open { .. }) {
            *self = Breaker::HalfOpen;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_read_back_as_written() {
        for s in [
            RunState::Active,
            RunState::Paused,
            RunState::Stopped,
            RunState::Completed,
            RunState::Exhausted,
            RunState::Idle,
        ] {
            assert_eq!(RunState::parse(s.as_str()), s);
        }
        assert_eq!(RunState::parse("no such state"), RunState::Idle);
        for b in [
            Breaker::Closed,
            Breaker::Open { until: 42 },
            Breaker::HalfOpen,
        ] {
            assert_eq!(Breaker::parse(b.as_str(), b.until()), b);
        }
        assert_eq!(Breaker::parse("open", None), Breaker::Open { until: 0 });
    }

    #[test]
    fn an_open_breaker_cools_down_then_lets_one_trial_through() {
        let mut b = Breaker::Open { until: 100 };
        assert_eq!(b.cooling(99), Some(100));
        assert_eq!(b.cooling(100), None);
        assert!(b.begin_trial());
        assert_eq!(b, Breaker::HalfOpen);
        assert!(
            !b.begin_trial(),
            "a half-open breaker is already in its trial"
        );
        let mut closed = Breaker::Closed;
        assert!(!closed.begin_trial());
        assert_eq!(closed, Breaker::Closed);
    }
}
