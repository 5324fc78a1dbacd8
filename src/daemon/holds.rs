//! The lasting "nothing is done" states announced for each target (left alone, rate limited,
//! circuit breaker open), so that each is logged when it begins and when it ends instead of at
//! every evaluation. What the brakes decide stays in `budget`; this only remembers what was said.

use super::budget::Decision;
use std::collections::BTreeMap;

/// Why nothing is done about a conclusive finding, for as long as it lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// The target is escalated.
    LeftAlone,
    /// The target's rate limit is spent.
    RateLimited,
    /// The global circuit breaker is open.
    BreakerOpen,
}

impl Hold {
    /// The hold a decision puts the target in; `None`: it is acted on.
    pub fn of(decision: &Decision) -> Option<Self> {
        match decision {
            Decision::Act => None,
            Decision::LeaveAlone => Some(Self::LeftAlone),
            Decision::RateLimited { .. } => Some(Self::RateLimited),
            Decision::BreakerOpen { .. } => Some(Self::BreakerOpen),
        }
    }

    /// The snake_case name used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LeftAlone => "left_alone",
            Self::RateLimited => "rate_limited",
            Self::BreakerOpen => "breaker_open",
        }
    }
}

/// What to log about a target's hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// It is held now, and was not (or was held for another reason).
    Began(Hold),
    /// It is acted on again.
    Ended(Hold),
}

/// The hold last announced for each target.
#[derive(Debug, Default)]
pub struct Announced(BTreeMap<String, Hold>);

impl Announced {
    /// The target is now in `hold` (`None`: acted on); returns what to announce, if anything.
    pub fn update(&mut self, target: &str, hold: Option<Hold>) -> Option<Change> {
        match hold {
            Some(h) if self.0.get(target) == Some(&h) => None,
            Some(h) => {
                self.0.insert(target.to_string(), h);
                Some(Change::Began(h))
            }
            None => self.0.remove(target).map(Change::Ended),
        }
    }

    /// The target's incident is over: its hold goes with it, unannounced (the resolution is
    /// logged), and a new incident announces its hold afresh.
    pub fn forget(&mut self, target: &str) {
        self.0.remove(target);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_is_announced_when_it_begins_and_when_it_ends_not_in_between() {
        let mut a = Announced::default();
        assert_eq!(a.update("a", None), None, "acting, as before");
        assert_eq!(
            a.update("a", Some(Hold::BreakerOpen)),
            Some(Change::Began(Hold::BreakerOpen))
        );
        assert_eq!(a.update("a", Some(Hold::BreakerOpen)), None);
        assert_eq!(a.update("a", Some(Hold::BreakerOpen)), None);
        assert_eq!(
            a.update("b", Some(Hold::BreakerOpen)),
            Some(Change::Began(Hold::BreakerOpen)),
            "per target"
        );
        assert_eq!(a.update("a", None), Some(Change::Ended(Hold::BreakerOpen)));
        assert_eq!(a.update("a", None), None, "ended once");
    }

    #[test]
    fn another_reason_is_a_new_hold() {
        let mut a = Announced::default();
        a.update("a", Some(Hold::RateLimited));
        assert_eq!(
            a.update("a", Some(Hold::LeftAlone)),
            Some(Change::Began(Hold::LeftAlone))
        );
        assert_eq!(a.update("a", None), Some(Change::Ended(Hold::LeftAlone)));
    }

    #[test]
    fn a_resolved_incident_takes_its_hold_along_silently() {
        let mut a = Announced::default();
        a.update("a", Some(Hold::LeftAlone));
        a.forget("a");
        assert_eq!(a.update("a", None), None, "nothing ends twice");
        assert_eq!(
            a.update("a", Some(Hold::LeftAlone)),
            Some(Change::Began(Hold::LeftAlone)),
            "the next incident announces it again"
        );
    }

    #[test]
    fn decisions_map_to_holds() {
        assert_eq!(Hold::of(&Decision::Act), None);
        assert_eq!(Hold::of(&Decision::LeaveAlone), Some(Hold::LeftAlone));
        assert_eq!(
            Hold::of(&Decision::RateLimited { escalate: None }),
            Some(Hold::RateLimited)
        );
        assert_eq!(
            Hold::of(&Decision::BreakerOpen { escalate: None }),
            Some(Hold::BreakerOpen)
        );
    }
}
