//! The images a PrePullSet or BackupPolicy selects, as the mirror holds them: read from the
//! mirror only, never from upstream.

use std::collections::BTreeSet;

use crate::desired::{DesiredState, ImageRef, Repository, Selection};
use crate::registry::{Registry, RegistryError};

/// One image a PrePullSet or BackupPolicy selects from the mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    pub repository: Repository,
    /// A tag, or a digest for images selected by digest.
    pub reference: String,
    pub mirror_set: Option<String>,
    pub source: Option<String>,
}

impl Selected {
    pub fn full(&self) -> String {
        let sep = if self.reference.contains(':') { '@' } else { ':' };
        format!("{}{sep}{}", self.repository, self.reference)
    }
}

/// The images named by MirrorSets and explicit references, as mirrored: the tags each
/// MirrorSet fixes, the mirror's tags its rules select, and the explicit images. Reads only
/// the mirror (tag lists of rule-selected images), never upstream. Also returns the mirror
/// repositories with tag rules that the mirror does not have at all.
pub async fn mirrored<R: Registry>(
    state: &DesiredState,
    mirror_sets: &BTreeSet<String>,
    images: &BTreeSet<ImageRef>,
    registry: &R,
) -> Result<(Vec<Selected>, Vec<String>), RegistryError> {
    let mut out = Vec::new();
    let mut absent = Vec::new();
    for name in mirror_sets {
        let Some(set) = state.mirror_sets.get(name) else { continue };
        for image in &set.images {
            let repository = set.target.repository_for(&image.source);
            let mut tags: BTreeSet<String> = image.fixed_tags().map(str::to_string).collect();
            if let Selection::Tags { rules: Some(rules), .. } = &image.selection {
                let listed = match registry.list_tags(&repository).await? {
                    Some(tags) => tags,
                    None => {
                        absent.push(repository.to_string());
                        Vec::new()
                    }
                };
                let listed: Vec<String> = listed.into_iter().filter(|t| !t.starts_with("sha256-")).collect();
                tags.extend(rules.select(&listed));
            }
            out.extend(tags.into_iter().map(|tag| Selected {
                source: Some(format!("{}:{tag}", image.source)),
                repository: repository.clone(),
                reference: tag,
                mirror_set: Some(name.clone()),
            }));
        }
    }
    for image in images {
        let reference = match (&image.tag, &image.digest) {
            (_, Some(digest)) => digest.to_string(),
            (Some(tag), None) => tag.clone(),
            (None, None) => continue,
        };
        out.push(Selected { repository: image.repository.clone(), reference, mirror_set: None, source: None });
    }
    out.sort_by(|a, b| (&a.repository.to_string(), &a.reference).cmp(&(&b.repository.to_string(), &b.reference)));
    out.dedup_by(|a, b| a.repository == b.repository && a.reference == b.reference);
    Ok((out, absent))
}
