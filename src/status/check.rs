//! One line of the DR-readiness report: a check of the DR plan, its answer, and the evidence.
//! The documents that feed a line (`backup`, `prepull`) build it; `readme` only lists them.

pub use crate::readiness::Readiness;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub result: Readiness,
    pub evidence: String,
}

impl Check {
    pub fn new(name: &'static str, result: Readiness, evidence: impl Into<String>) -> Check {
        Check { name, result, evidence: evidence.into() }
    }

    /// The worst of several answers for one check, their evidence joined with `; `.
    pub fn worst(name: &'static str, parts: impl IntoIterator<Item = (Readiness, String)>) -> Check {
        let mut result = Readiness::Pass;
        let mut evidence = Vec::new();
        for (r, why) in parts {
            result = result.max(r);
            evidence.push(why);
        }
        Check { name, result, evidence: evidence.join("; ") }
    }
}
