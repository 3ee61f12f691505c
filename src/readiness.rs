//! PASS, FAIL or UNKNOWN: the one answer every check gives, whoever asks (the DR report, the
//! status documents, backup records and listings, drills).
//!
//! Ordered from best to worst, so the worst of several answers is their maximum. UNKNOWN means
//! Lifeboat could not look; it is never read as PASS, and never as FAIL either.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Readiness {
    #[serde(rename = "PASS", alias = "pass")]
    Pass,
    #[serde(rename = "UNKNOWN", alias = "unknown")]
    Unknown,
    #[serde(rename = "FAIL", alias = "fail")]
    Fail,
}

impl Readiness {
    pub fn label(self) -> &'static str {
        match self {
            Readiness::Pass => "PASS",
            Readiness::Unknown => "UNKNOWN",
            Readiness::Fail => "FAIL",
        }
    }

    /// `Pass` when `ok`, else `Fail`.
    pub fn of(ok: bool) -> Readiness {
        if ok { Readiness::Pass } else { Readiness::Fail }
    }
}

impl std::fmt::Display for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_answer_wins_and_reads_back_in_either_case() {
        assert_eq!([Readiness::Pass, Readiness::Fail, Readiness::Unknown].into_iter().max(), Some(Readiness::Fail));
        assert_eq!([Readiness::Pass, Readiness::Unknown].into_iter().max(), Some(Readiness::Unknown));
        assert_eq!(serde_json::to_string(&Readiness::Unknown).unwrap(), "\"UNKNOWN\"");
        assert_eq!(serde_json::from_str::<Readiness>("\"pass\"").unwrap(), Readiness::Pass);
        assert_eq!(serde_json::from_str::<Readiness>("\"FAIL\"").unwrap(), Readiness::Fail);
    }
}
