//! Carries out a plan: the apply step of a pass, the only step that writes.
//!
//! For the mirror: changes to different mirror tags run in parallel, changes to one tag in
//! plan order (a backup before the copy that moves the tag), prunes last. For pre-pull
//! ([`prepull`]): each DaemonSet step in order. A failure is recorded and the pass goes on.

mod prepull;

pub use prepull::pre_pull;

use std::collections::BTreeMap;

use futures_util::StreamExt;

use crate::desired::{Platforms, SignaturePolicy};
use crate::outcome::{Outcome, OutcomeResult};
use crate::plan::{Action, Change, Plan};
use crate::registry::{CopyReport, CopyRequest, Registry, RegistryError, Verdict};

/// Mirror tags worked on at once; per-registry limits bound the requests beneath this.
pub const TAGS_IN_FLIGHT: usize = 8;

pub async fn mirror<R: Registry>(plan: &Plan, registry: &R) -> Vec<Outcome> {
    let (prunes, writes): (Vec<&Change>, Vec<&Change>) =
        plan.changes.iter().partition(|c| matches!(c.action, Action::Prune { .. }));
    let mut groups: BTreeMap<String, Vec<(usize, &Change)>> = BTreeMap::new();
    for (position, change) in writes.into_iter().enumerate() {
        groups.entry(change.action.target_tag()).or_default().push((position, change));
    }
    let mut numbered: Vec<(usize, Outcome)> =
        futures_util::stream::iter(groups.into_values().map(|changes| apply_group(registry, changes)))
            .buffer_unordered(TAGS_IN_FLIGHT)
            .flat_map(futures_util::stream::iter)
            .collect()
            .await;
    // Reported in plan order, whatever order the groups finished in.
    numbered.sort_by_key(|(position, _)| *position);
    let mut outcomes: Vec<Outcome> = numbered.into_iter().map(|(_, outcome)| outcome).collect();
    // Signatures travel as tags of their own, copied alongside: the mirror can only be checked
    // once every copy of the pass is done.
    futures_util::stream::iter(outcomes.iter_mut().map(|o| recheck(registry, o)))
        .buffer_unordered(TAGS_IN_FLIGHT)
        .collect::<Vec<()>>()
        .await;
    // A prune was planned against what the repository would hold after the copies; where a
    // copy or backup failed, that is not what it holds, and deleting could take a kept tag.
    let failed_repositories: std::collections::BTreeSet<String> = outcomes
        .iter()
        .filter(|o| matches!(o.result, OutcomeResult::Failed { .. }))
        .map(|o| repository_of(&o.change.action))
        .collect();
    for change in prunes {
        if failed_repositories.contains(&repository_of(&change.action)) {
            outcomes.push(Outcome::new(
                change,
                OutcomeResult::Failed {
                    error: "not attempted: a copy to this repository failed, so what it holds is not what was planned"
                        .into(),
                },
            ));
            continue;
        }
        outcomes.push(run(registry, change).await);
    }
    outcomes
}

fn repository_of(action: &Action) -> String {
    match action {
        Action::Copy { target, .. }
        | Action::Backup { target, .. }
        | Action::Prune { target, .. }
        | Action::Attach { target, .. }
        | Action::Referrers { target, .. } => target.to_string(),
    }
}

/// Checks a copied image's signatures against the mirror with its set's policy; under
/// `required`, a copy that does not verify there is a failure.
async fn recheck<R: Registry>(registry: &R, outcome: &mut Outcome) {
    let Action::Copy { digest, target, tag, recheck: Some(policy), .. } = &outcome.change.action else {
        return;
    };
    if !matches!(outcome.result, OutcomeResult::Done { .. }) {
        return;
    }
    let verdict = match registry.verify(&outcome.change.mirror_set, target, digest).await {
        Ok(v) => v,
        Err(e) => Verdict::Rejected { reason: format!("the mirror could not be read: {e}") },
    };
    if let Verdict::Rejected { reason } = &verdict {
        tracing::warn!(set = %outcome.change.mirror_set, image = %format!("{target}:{tag}"), %reason, "copied, but the mirror copy does not verify");
        if *policy == SignaturePolicy::Required {
            outcome.result = OutcomeResult::Failed {
                error: format!("copied, but its signatures do not verify against the mirror: {reason}"),
            };
        }
    }
    outcome.mirror_verification = Some(verdict);
}

/// Copies referrer manifests by digest, then (for a mirror without the referrers API) writes
/// the fallback tag: an index of their descriptors, as OCI 1.1 clients expect it.
async fn copy_referrers<R: Registry>(
    registry: &R,
    source: &crate::desired::Repository,
    target: &crate::desired::Repository,
    subject: &crate::desired::Digest,
    descriptors: &[serde_json::Value],
    fallback: bool,
) -> Result<CopyReport, RegistryError> {
    let mut report = CopyReport::default();
    for descriptor in descriptors {
        let Some(digest) = descriptor.get("digest").and_then(|d| d.as_str()).and_then(|d| d.parse().ok()) else {
            continue;
        };
        let request = CopyRequest {
            source: source.clone(),
            target: target.clone(),
            tag: crate::desired::Digest::to_string(&digest),
            digest,
            platforms: Platforms::All,
        };
        let copied = registry.copy(&request).await?;
        report.add(&copied);
    }
    if fallback {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": crate::registry::manifest::OCI_INDEX,
            "manifests": descriptors,
        });
        let bytes = bytes::Bytes::from(serde_json::to_vec(&index).expect("JSON serializes"));
        let tag = crate::registry::cosign::attached_tag(subject, "");
        registry.put_manifest(target, &tag, bytes, crate::registry::manifest::OCI_INDEX).await?;
        report.manifests_pushed += 1;
    }
    Ok(report)
}

/// Changes to one mirror tag, in order; once one fails the rest are not attempted.
async fn apply_group<R: Registry>(registry: &R, changes: Vec<(usize, &Change)>) -> Vec<(usize, Outcome)> {
    let mut outcomes = Vec::new();
    let mut failed = false;
    for (position, change) in changes {
        if failed {
            outcomes.push((
                position,
                Outcome::new(
                    change,
                    OutcomeResult::Failed { error: "not attempted: an earlier change to this tag failed".into() },
                ),
            ));
            continue;
        }
        let outcome = run(registry, change).await;
        failed = matches!(outcome.result, OutcomeResult::Failed { .. });
        outcomes.push((position, outcome));
    }
    outcomes
}

async fn run<R: Registry>(registry: &R, change: &Change) -> Outcome {
    let result: Result<CopyReport, RegistryError> = match &change.action {
        Action::Copy { source, digest, target, tag, platforms, .. } => {
            let request = CopyRequest {
                source: source.clone(),
                digest: digest.clone(),
                target: target.clone(),
                tag: tag.clone(),
                platforms: platforms.clone(),
            };
            registry.copy(&request).await
        }
        Action::Backup { target, digest, backup_tag, .. } => {
            let request = CopyRequest {
                source: target.clone(),
                digest: digest.clone(),
                target: target.clone(),
                tag: backup_tag.clone(),
                platforms: Platforms::All,
            };
            registry.copy(&request).await
        }
        Action::Attach { source, digest, target, tag, .. } => {
            let request = CopyRequest {
                source: source.clone(),
                digest: digest.clone(),
                target: target.clone(),
                tag: tag.clone(),
                platforms: Platforms::All,
            };
            registry.copy(&request).await
        }
        Action::Referrers { source, target, subject, descriptors, fallback } => {
            copy_referrers(registry, source, target, subject, descriptors, *fallback).await
        }
        Action::Prune { target, digest, .. } => registry.delete(target, digest).await.map(|()| CopyReport::default()),
    };
    match result {
        Ok(report) => {
            tracing::info!(set = %change.mirror_set, action = %change.action.target_tag(), why = %change.why, "applied");
            Outcome::new(change, OutcomeResult::Done { report })
        }
        Err(e) => {
            tracing::warn!(set = %change.mirror_set, action = %change.action.target_tag(), error = %e, "failed");
            Outcome::new(change, OutcomeResult::Failed { error: e.to_string() })
        }
    }
}
