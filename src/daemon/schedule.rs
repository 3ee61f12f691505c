//! When each scheduled item (a MirrorSet, a BackupPolicy) runs next, and which are running:
//! an item due while its previous run is still going is skipped, never run twice at once.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

#[derive(Debug, Default)]
pub(super) struct Schedule {
    due: BTreeMap<String, DateTime<Utc>>,
    running: BTreeSet<String>,
}

/// What [`Schedule::take_due`] found due.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Due {
    /// To start now (now marked running).
    pub start: Vec<String>,
    /// Due, but the previous run is still going.
    pub skipped: Vec<String>,
}

impl Schedule {
    /// Follows a new set of items, each due at the time given (`None`: never); items that left
    /// are forgotten, except that a running one stays running until it finishes.
    pub fn follow(&mut self, items: impl IntoIterator<Item = (String, Option<DateTime<Utc>>)>) {
        self.due = items.into_iter().filter_map(|(name, at)| Some((name, at?))).collect();
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.due.keys()
    }

    /// The soonest due time.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.due.values().min().copied()
    }

    /// Every item runs at `now` (an explicit trigger, a new desired state).
    pub fn all_due(&mut self, now: DateTime<Utc>) {
        self.due.values_mut().for_each(|t| *t = now);
    }

    /// One item runs at `now`, whether or not it was scheduled.
    pub fn due_now(&mut self, name: &str, now: DateTime<Utc>) {
        self.due.insert(name.to_string(), now);
    }

    /// The items due at `now`, each moved to its next time by `next` (`None`: never again);
    /// those still running are skipped.
    pub fn take_due(&mut self, now: DateTime<Utc>, next: impl Fn(&str) -> Option<DateTime<Utc>>) -> Due {
        let names: Vec<String> = self.due.iter().filter(|(_, t)| **t <= now).map(|(n, _)| n.clone()).collect();
        let mut due = Due::default();
        for name in names {
            match next(&name) {
                Some(at) => self.due.insert(name.clone(), at),
                None => self.due.remove(&name),
            };
            if self.running.insert(name.clone()) {
                due.start.push(name);
            } else {
                due.skipped.push(name);
            }
        }
        due
    }

    pub fn is_running(&self, name: &str) -> bool {
        self.running.contains(name)
    }

    pub fn running(&self) -> usize {
        self.running.len()
    }

    pub fn running_names(&self) -> BTreeSet<String> {
        self.running.clone()
    }

    /// A run ended.
    pub fn finished(&mut self, name: &str) {
        self.running.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_due_item_starts_once_and_is_skipped_while_it_runs() {
        let t0: DateTime<Utc> = "2026-12-01T00:00:00Z".parse().unwrap();
        let hour = chrono::Duration::hours(1);
        let mut s = Schedule::default();
        s.follow([("a".to_string(), Some(t0)), ("b".to_string(), Some(t0 + hour)), ("c".to_string(), None)]);
        assert_eq!(s.next_due(), Some(t0));
        let due = s.take_due(t0, |_| Some(t0 + hour));
        assert_eq!(due, Due { start: vec!["a".into()], skipped: vec![] });
        // Still running an hour later: skipped, and moved on.
        let due = s.take_due(t0 + hour, |_| Some(t0 + hour * 2));
        assert_eq!(due, Due { start: vec!["b".into()], skipped: vec!["a".into()] });
        s.finished("a");
        let due = s.take_due(t0 + hour * 2, |_| None);
        assert_eq!(due, Due { start: vec!["a".into()], skipped: vec!["b".into()] });
        assert_eq!(s.next_due(), None);
    }
}
