//! Choosing tags from an upstream tag list with a MirrorSet's `tagRules`. Pure.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use super::TagRules;

/// A tag read as a version: `v` prefix dropped, missing minor and patch taken as 0, so `3.12`
/// is 3.12.0 and `v2` is 2.0.0. `None` for tags that are not versions (`latest`, `bookworm`).
pub fn tag_version(tag: &str) -> Option<semver::Version> {
    let text = tag.strip_prefix('v').unwrap_or(tag);
    let (core, rest) = match text.find(['-', '+']) {
        Some(i) => (&text[..i], &text[i..]),
        None => (text, ""),
    };
    let parts: Vec<&str> = core.split('.').collect();
    if parts.is_empty()
        || parts.len() > 3
        || parts.iter().any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let mut padded = parts.clone();
    padded.resize(3, "0");
    semver::Version::parse(&format!("{}{rest}", padded.join("."))).ok()
}

impl TagRules {
    /// The tags these rules select from `tags`: `allow` (any), not `deny` (any), inside the
    /// `semver` range, then the `keepLatest` highest versions.
    pub fn select<'a>(&self, tags: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
        let mut chosen: Vec<(&String, Option<semver::Version>)> = tags
            .into_iter()
            .filter(|t| self.allow.is_empty() || self.allow.iter().any(|r| r.is_match(t)))
            .filter(|t| !self.deny.iter().any(|r| r.is_match(t)))
            .map(|t| (t, tag_version(t)))
            .filter(|(_, v)| match (&self.semver, v) {
                (None, _) => true,
                (Some(req), Some(v)) => req.matches(v),
                (Some(_), None) => false,
            })
            .collect();
        if let Some(n) = self.keep_latest {
            // Highest versions first; tags that are not versions after them, by name.
            chosen.sort_by(|(ta, va), (tb, vb)| match (va, vb) {
                (Some(a), Some(b)) => b.cmp(a).then_with(|| tb.cmp(ta)),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => tb.cmp(ta),
            });
            chosen.truncate(n as usize);
        }
        chosen.into_iter().map(|(t, _)| t.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

    fn rules(semver: Option<&str>, allow: &[&str], deny: &[&str], keep: Option<u32>) -> TagRules {
        TagRules {
            semver: semver.map(|s| semver::VersionReq::parse(s).unwrap()),
            allow: allow.iter().map(|r| Regex::new(r).unwrap()).collect(),
            deny: deny.iter().map(|r| Regex::new(r).unwrap()).collect(),
            keep_latest: keep,
        }
    }

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn versions_are_read_leniently() {
        assert_eq!(tag_version("3.12"), Some(semver::Version::new(3, 12, 0)));
        assert_eq!(tag_version("v2"), Some(semver::Version::new(2, 0, 0)));
        assert_eq!(tag_version("3.13.0-rc1").unwrap().pre.as_str(), "rc1");
        for not in ["latest", "3.12-slim-bookworm-x", "1.2.3.4", "", "3..1"] {
            if not == "3.12-slim-bookworm-x" {
                // a pre-release in semver terms: still a version
                assert!(tag_version(not).is_some());
                continue;
            }
            assert_eq!(tag_version(not), None, "{not}");
        }
    }

    #[test]
    fn the_design_example_selects_the_three_latest_3_12_and_3_13() {
        let upstream = tags(&["3.11.9", "3.12", "3.12.1", "3.12.2", "3.13.0", "3.13.1-rc1", "3.14.0", "latest", "2.7"]);
        let chosen = rules(Some(">=3.12, <3.14"), &["^3\\."], &["-rc"], Some(3)).select(&upstream);
        assert_eq!(chosen, BTreeSet::from(["3.12.1".into(), "3.12.2".into(), "3.13.0".into()]));
    }

    #[test]
    fn each_rule_alone() {
        let upstream = tags(&["1.0", "1.1", "2.0", "edge", "1.1-debug"]);
        assert_eq!(rules(None, &["debug$"], &[], None).select(&upstream), BTreeSet::from(["1.1-debug".into()]));
        assert_eq!(rules(None, &[], &["^1"], None).select(&upstream), BTreeSet::from(["2.0".into(), "edge".into()]));
        assert_eq!(rules(Some("^1"), &[], &[], None).select(&upstream), BTreeSet::from(["1.0".into(), "1.1".into()]));
        assert_eq!(rules(None, &[], &[], Some(2)).select(&upstream), BTreeSet::from(["2.0".into(), "1.1".into()]));
        assert_eq!(rules(None, &[], &[], None).select(&upstream).len(), 5);
    }
}
