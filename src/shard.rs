//! Sharding a pass by mirror repository, with no coordination between the shards.
//!
//! `--shard I/N` keeps, of every MirrorSet, only the images whose mirror repository hashes to
//! shard `I` of `N`. The hash is of the repository's name alone (SHA-256, so it is the same on
//! every machine and in every release), so a repository always lands in the same shard: its
//! tags, signatures, attached tags and backup tags stay together, and prune decisions, which are
//! made per mirror repository from every set writing to it, stay whole. The shards' plans are
//! disjoint and their union is the unsharded plan (a property test in `reconcile`).
//!
//! A shard is the mirror stage only: pre-pull, failover, backups and the status report need the
//! whole desired state, and stay with the unsharded pass that combines the shards.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::desired::{DesiredState, MirrorSet, Repository};

/// Shard `index` of `count` (0-based, as a Kubernetes Indexed Job numbers its completions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    index: u32,
    count: u32,
}

/// The most shards a pass may be cut into.
pub const MAX_SHARDS: u32 = 1024;

impl Shard {
    pub fn new(index: u32, count: u32) -> Result<Shard, String> {
        if count == 0 || count > MAX_SHARDS {
            return Err(format!("the shard count must be 1 to {MAX_SHARDS}, not {count}"));
        }
        if index >= count {
            return Err(format!("shard {index} of {count} does not exist: shards are numbered 0 to {}", count - 1));
        }
        Ok(Shard { index, count })
    }

    pub fn index(self) -> u32 {
        self.index
    }

    pub fn count(self) -> u32 {
        self.count
    }

    /// Whether this shard handles the mirror repository `repository`.
    pub fn owns(self, repository: &Repository) -> bool {
        shard_of(repository, self.count) == self.index
    }

    /// The part of `desired` this shard handles: the registries, and of each MirrorSet the
    /// images landing in this shard's mirror repositories (sets left with none are left out).
    pub fn of(self, desired: &DesiredState) -> DesiredState {
        let mirror_sets = desired
            .mirror_sets
            .iter()
            .filter_map(|(name, set)| {
                let images: Vec<_> = set
                    .images
                    .iter()
                    .filter(|image| self.owns(&set.target.repository_for(&image.source)))
                    .cloned()
                    .collect();
                (!images.is_empty()).then(|| (name.clone(), MirrorSet { images, ..set.clone() }))
            })
            .collect();
        DesiredState { registries: desired.registries.clone(), mirror_sets, ..DesiredState::default() }
    }
}

/// The shard of `count` that handles `repository`.
pub fn shard_of(repository: &Repository, count: u32) -> u32 {
    let hash = Sha256::digest(format!("{}/{}", repository.host, repository.path).as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    (u64::from_be_bytes(first) % u64::from(count.max(1))) as u32
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Shard, String> {
        let usage = || format!("`{s}` is not a shard: write I/N, for example 0/4 (shards are numbered from 0)");
        let (index, count) = s.split_once('/').ok_or_else(usage)?;
        let index: u32 = index.trim().parse().map_err(|_| usage())?;
        let count: u32 = count.trim().parse().map_err(|_| usage())?;
        Shard::new(index, count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(path: &str) -> Repository {
        Repository { host: "mirror.example:5000".into(), path: path.into() }
    }

    #[test]
    fn a_shard_is_read_as_index_over_count() {
        assert_eq!("2/4".parse::<Shard>(), Ok(Shard { index: 2, count: 4 }));
        assert_eq!("0/1".parse::<Shard>().map(|s| s.to_string()), Ok("0/1".to_string()));
        let err = "4/4".parse::<Shard>().unwrap_err();
        assert!(err.contains("numbered 0 to 3"), "{err}");
        assert!("0/0".parse::<Shard>().unwrap_err().contains("1 to 1024"));
        assert!("1".parse::<Shard>().unwrap_err().contains("write I/N"));
        assert!("-1/2".parse::<Shard>().is_err());
    }

    #[test]
    fn a_repository_always_lands_in_the_same_shard() {
        // Fixed values: a change to the hash would move repositories between shards of a
        // running estate, so it is pinned here.
        assert_eq!(shard_of(&repo("mirror/base/glibc"), 4), 1);
        assert_eq!(shard_of(&repo("mirror/base/busybox"), 4), 0);
        assert_eq!(shard_of(&repo("mirror/app"), 4), 2);
        assert_eq!(shard_of(&repo("mirror/app"), 7), 4);
        let spread: std::collections::BTreeSet<u32> =
            (0..64).map(|n| shard_of(&repo(&format!("mirror/app{n}")), 4)).collect();
        assert_eq!(spread.len(), 4, "64 repositories reach every one of 4 shards");
        assert_eq!(shard_of(&repo("anything"), 1), 0);
    }
}
