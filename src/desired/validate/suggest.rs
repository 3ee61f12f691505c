//! "Did you mean" hints and lists of names in hints, at a cost bounded whatever the desired
//! state holds.

use std::cell::Cell;

/// "Did you mean" hints for one load. Each compares a word with every candidate, at a cost
/// that grows with the product of their lengths, so there are at most [`SUGGESTIONS`] of them,
/// none for a word over [`SUGGESTION_LENGTH`] characters or among more than
/// [`SUGGESTION_CANDIDATES`] candidates: a file of a hundred thousand misspelt names is
/// refused as quickly as a file of one.
pub(super) struct Suggester {
    left: Cell<usize>,
}

const SUGGESTIONS: usize = 100;
const SUGGESTION_LENGTH: usize = 64;
const SUGGESTION_CANDIDATES: usize = 256;

impl Suggester {
    pub(super) fn new() -> Suggester {
        Suggester { left: Cell::new(SUGGESTIONS) }
    }

    /// The closest candidate within a small edit distance.
    pub(super) fn closest<'a>(&self, word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
        let left = self.left.get();
        if left == 0 {
            return None;
        }
        self.left.set(left - 1);
        closest(word, candidates)
    }
}

fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    if word.len() > SUGGESTION_LENGTH {
        return None;
    }
    let candidates: Vec<&str> = candidates.take(SUGGESTION_CANDIDATES + 1).collect();
    if candidates.len() > SUGGESTION_CANDIDATES {
        return None;
    }
    let word = word.to_lowercase();
    candidates
        .into_iter()
        .filter(|c| c.len() <= SUGGESTION_LENGTH && c.len().abs_diff(word.len()) <= 2.max(c.len() / 4))
        .map(|c| (strsim::damerau_levenshtein(&word, &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min()
        .map(|(_, c)| c)
}

/// Names for a hint: all of them when there are few, else the first few and how many more.
pub(super) fn listed<'a>(names: impl ExactSizeIterator<Item = &'a str>) -> String {
    const SHOWN: usize = 12;
    let total = names.len();
    let mut text = names.take(SHOWN).collect::<Vec<_>>().join(", ");
    if total > SHOWN {
        text.push_str(&format!(" and {} more", total - SHOWN));
    }
    text
}
