//! One export of a BackupPolicy, start to finish, for the command line and the daemon alike:
//! select and read the images from the mirror, stream them into an archive (encrypted and
//! split as the policy says), verify what was written, record it next to the archive, and
//! apply the policy's retention. The archive only gets its final name once complete, and its
//! name is its own: exports of one policy at once each write their own archive.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use super::catalog::{self, Integrity, IntegrityCheck, IntegrityResult, Record};
use super::export::{self, Contents, Header};
use super::sink::{self, Identities, Sink, Taken};
use crate::desired::{BackupPolicy, DesiredState, Digest};
use crate::registry::OciRegistry;
use crate::registry::cosign::BlobSigner;

/// What to export and where.
pub struct Job {
    pub policy: String,
    pub spec: BackupPolicy,
    pub destination: PathBuf,
    /// Incremental: the earlier archive (in `destination`) whose blobs are left out.
    pub base: Option<String>,
    pub signer: Option<Arc<BlobSigner>>,
    /// Decrypt the new archive to re-hash its content (encrypted policies).
    pub identities: Arc<Identities>,
    pub desired_revision: Option<String>,
}

/// What an export produced.
pub struct Exported {
    pub record: Record,
    pub path: PathBuf,
    /// Images the policy selects that the mirror lacks; the export is then incomplete.
    pub missing: Vec<super::metadata::Missing>,
    /// Archives retention deleted.
    pub pruned: Vec<PathBuf>,
    /// Problems found verifying the new archive (empty when it passed).
    pub problems: Vec<String>,
}

/// Every blob stored in `base` and the archives it builds on, from their records.
fn chain_blobs(dir: &Path, base: &str) -> anyhow::Result<BTreeSet<Digest>> {
    let mut blobs = BTreeSet::new();
    let mut next = Some(base.to_string());
    let mut seen = BTreeSet::new();
    while let Some(name) = next {
        anyhow::ensure!(seen.insert(name.clone()), "the archives built on {base} form a loop at {name}");
        let record = Record::read(&dir.join(format!("{name}{}", catalog::RECORD_SUFFIX))).with_context(|| {
            format!("an incremental archive builds on an archive Lifeboat recorded; {name} has no readable record")
        })?;
        anyhow::ensure!(
            record.passed(),
            "{name} failed verification; build a full archive instead of one on top of it"
        );
        blobs.extend(record.stored_blobs.iter().filter_map(|d| d.parse().ok()));
        next = record.base.clone();
    }
    Ok(blobs)
}

/// How many names, one second apart, an export tries before giving up.
const NAMES_TRIED: i64 = 600;

/// Picks the archive's name and starts writing it. Names carry the time to the second; an
/// export finding its name held (an archive or record of that second, or another export of the
/// policy that chose the same second) takes the next second. So two exports at once, such as
/// the daemon's scheduled one and one run by hand, each write an archive of their own: neither
/// waits for the other, and neither can spoil the other's files.
fn reserve(job: &Job, recipients: &[String]) -> anyhow::Result<(String, chrono::DateTime<chrono::Utc>, Sink)> {
    let spec = &job.spec;
    let first = chrono::Utc::now();
    let recorded: BTreeSet<String> = catalog::scan(&job.destination)?.into_iter().map(|e| e.archive).collect();
    let mut last_taken = None;
    for offset in 0..NAMES_TRIED {
        let created_at = first + chrono::Duration::seconds(offset);
        let name = catalog::archive_name(&job.policy, created_at, spec.compression, !recipients.is_empty());
        if recorded.contains(&name) {
            continue;
        }
        let path = job.destination.join(&name);
        match Sink::create(&path, recipients, spec.max_part_size.as_ref().map(|s| s.bytes())) {
            Ok(sink) => return Ok((name, created_at, sink)),
            Err(e) => match e.downcast::<Taken>() {
                Ok(taken) => {
                    tracing::debug!(archive = %path.display(), held_by = %taken.by.display(), "archive name taken, trying the next second");
                    last_taken = Some(taken);
                }
                Err(e) => return Err(e.context(format!("creating {}", path.display()))),
            },
        }
    }
    anyhow::bail!(
        "no free archive name for policy {} in {} for {NAMES_TRIED} seconds from {first}{}: other exports of the policy \
         are running, or interrupted ones left .partial files (retention removes them after a day)",
        job.policy,
        job.destination.display(),
        last_taken.map_or(String::new(), |t| format!(" (the last one: {t})"))
    )
}

pub async fn export(
    state: &DesiredState,
    registry: &OciRegistry,
    job: Job,
    progress: impl Fn(u64) + Send + Sync + 'static,
) -> anyhow::Result<Exported> {
    let spec = &job.spec;
    std::fs::create_dir_all(&job.destination)
        .with_context(|| format!("creating the backup destination {}", job.destination.display()))?;
    let (selected, _) = crate::observe::mirrored(state, &spec.mirror_sets, &spec.images, registry).await?;
    let mut contents = Contents::collect(registry, &selected).await?;
    let in_base = match &job.base {
        Some(base) => contents.without(&chain_blobs(&job.destination, base)?),
        None => Vec::new(),
    };
    let stored_blobs: Vec<String> = contents.blobs.keys().map(|d| d.to_string()).collect();
    let missing = contents.missing.clone();
    let recipients: Vec<String> =
        spec.encryption.as_ref().map(|e| e.age_recipients.iter().cloned().collect()).unwrap_or_default();
    let (name, created_at, sink) = reserve(&job, &recipients)?;
    let path = job.destination.join(&name);
    let signer = job.signer.clone();
    let header = Header {
        policy: job.policy.clone(),
        created_at,
        desired_revision: job.desired_revision.clone(),
        compression: spec.compression,
        base: job.base.clone(),
        in_base,
        sign: signer.map(|s| Box::new(move |bytes: &[u8]| s.sign(bytes)) as _),
    };
    let images = contents.images.len();
    let (sink, written) = export::write(registry, contents, header, sink, progress).await?;
    let parts = tokio::task::spawn_blocking(move || sink.finish())
        .await
        .context("finishing the archive stopped")?
        .with_context(|| format!("finishing {}", path.display()))?;

    // Read back what is on disk: the content when it can be decrypted, else the stored bytes.
    let encrypted = !recipients.is_empty();
    let mut record = Record {
        format: catalog::RECORD_FORMAT.into(),
        archive: name.clone(),
        policy: job.policy.clone(),
        created_at,
        parts: parts
            .iter()
            .map(|p| catalog::Part {
                file: p.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                size: p.size,
                sha256: p.sha256.clone(),
            })
            .collect(),
        size: parts.iter().map(|p| p.size).sum(),
        compression: spec.compression,
        encrypted,
        recipients,
        images: images as u64,
        blobs: stored_blobs.len() as u64,
        stored_blobs,
        aggregate: written.aggregate.clone(),
        base: job.base.clone(),
        integrity: Integrity { result: IntegrityResult::Fail, checked_at: created_at, how: IntegrityCheck::Stored },
        desired_revision: job.desired_revision.clone(),
        lifeboat_version: env!("CARGO_PKG_VERSION").into(),
    };
    let check_path = path.clone();
    let identities = job.identities.clone();
    let dir = job.destination.clone();
    let stored = record.clone();
    let (how, problems) = tokio::task::spawn_blocking(move || -> anyhow::Result<(IntegrityCheck, Vec<String>)> {
        if !encrypted || !identities.is_empty() {
            let verification = super::archive::verify(sink::open(&check_path, &identities)?)?;
            Ok((IntegrityCheck::Content, verification.problems))
        } else {
            Ok((IntegrityCheck::Stored, catalog::check_stored(&dir, &stored)?))
        }
    })
    .await
    .context("verification stopped")??;
    record.integrity = Integrity {
        result: if problems.is_empty() { IntegrityResult::Pass } else { IntegrityResult::Fail },
        checked_at: chrono::Utc::now(),
        how,
    };
    record.write(&job.destination).with_context(|| format!("recording {name}"))?;

    let pruned = if problems.is_empty() { prune(&job.destination, &job.policy, spec)? } else { Vec::new() };
    Ok(Exported { record, path, missing, pruned, problems })
}

/// Applies the policy's retention to its archives in `dir`.
pub fn prune(dir: &Path, policy: &str, spec: &BackupPolicy) -> anyhow::Result<Vec<PathBuf>> {
    if spec.retention.keep.is_none() && spec.retention.max_age.is_none() {
        return Ok(Vec::new());
    }
    let entries: Vec<catalog::Entry> = catalog::scan(dir)?.into_iter().filter(|e| e.policy() == policy).collect();
    let max_age = spec
        .retention
        .max_age
        .as_ref()
        .map(|p| chrono::Duration::from_std(p.duration()).unwrap_or(chrono::Duration::MAX));
    let deletions = catalog::retention(&entries, spec.retention.keep, max_age, chrono::Utc::now());
    for d in &deletions {
        tracing::info!(policy, archive = %d.archive, reason = %d.reason, "retention deletes an archive");
    }
    catalog::prune(dir, &deletions)
}

/// What each BackupPolicy's destination holds, for status and metrics; `errors` are the last
/// export failures the caller knows of. Reads records and file sizes only, on the blocking
/// pool.
pub async fn observe(
    state: &DesiredState,
    errors: &std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeMap<String, crate::status::BackupObservation> {
    let policies: Vec<(String, String)> =
        state.backup_policies.iter().map(|(n, p)| (n.clone(), p.destination.clone())).collect();
    let errors = errors.clone();
    let observed = tokio::task::spawn_blocking(move || {
        policies
            .into_iter()
            .map(|(name, destination)| {
                let o = observe_one(&name, &destination, errors.get(&name).cloned());
                (name, o)
            })
            .collect()
    })
    .await;
    observed.unwrap_or_default()
}

fn observe_one(policy: &str, destination: &str, last_error: Option<String>) -> crate::status::BackupObservation {
    use crate::status::{ArchiveFacts, BackupObservation};
    let mut o = BackupObservation { destination: destination.to_string(), last_error, ..Default::default() };
    let entries = match catalog::scan(Path::new(destination)) {
        Ok(entries) => entries,
        Err(e) => {
            o.unreadable = Some(format!("{e:#}"));
            return o;
        }
    };
    let entries: Vec<&catalog::Entry> =
        entries.iter().filter(|e| e.policy() == policy && !matches!(e.state, catalog::State::Incomplete)).collect();
    o.archives = entries.len();
    let facts = |e: &catalog::Entry| ArchiveFacts {
        name: e.archive.clone(),
        created_at: e.created_at,
        size: e.size(),
        aggregate: e.record().map(|r| r.aggregate.clone()).unwrap_or_default(),
        integrity: e
            .record()
            .map_or(crate::readiness::Readiness::Unknown, |_| crate::readiness::Readiness::of(e.verified())),
        checked: e.record().map_or("no record".into(), |r| r.integrity.how.describe().to_string()),
        encrypted: e.encrypted(),
        images: e.record().map_or(0, |r| r.images),
        parts: e.parts(),
        base: e.record().and_then(|r| r.base.clone()),
    };
    o.newest = entries.last().map(|e| facts(e));
    if !entries.last().is_some_and(|e| e.verified()) {
        o.newest_verified = entries.iter().rev().find(|e| e.verified()).map(|e| facts(e));
    }
    o
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::sync::Barrier;

    use super::*;
    use crate::desired::{Compression, Origin, Retention};

    fn job(destination: &Path, max_part_size: Option<&str>) -> Job {
        Job {
            policy: "nightly".into(),
            spec: BackupPolicy {
                origin: Origin { file: "b.yaml".into(), line: 1 },
                schedule: "0 3 * * *".parse().unwrap(),
                mirror_sets: BTreeSet::new(),
                images: BTreeSet::new(),
                destination: destination.display().to_string(),
                retention: Retention { keep: None, max_age: None },
                compression: Compression::Zstd,
                encryption: None,
                max_part_size: max_part_size.map(|s| s.parse().unwrap()),
            },
            destination: destination.to_path_buf(),
            base: None,
            signer: None,
            identities: Arc::new(Identities::none()),
            desired_revision: None,
        }
    }

    /// Two exports of one policy choosing a name in the same instant shared one `.partial`
    /// file. Released together, again and again, they now always write under names of their
    /// own, and each archive holds exactly what its export wrote.
    #[test]
    fn exports_choosing_a_name_at_once_never_share_it() {
        for round in 0..40 {
            let dir = tempfile::tempdir().unwrap();
            // Every other round one of the two is split into parts: the layouts differ.
            let jobs = [job(dir.path(), None), job(dir.path(), (round % 2 == 1).then_some("1MiB"))];
            let start = Barrier::new(2);
            let written: Vec<(String, PathBuf, Vec<u8>)> = std::thread::scope(|scope| {
                let handles: Vec<_> = jobs
                    .iter()
                    .enumerate()
                    .map(|(i, job)| {
                        let start = &start;
                        scope.spawn(move || {
                            start.wait();
                            let (name, _, mut sink) = reserve(job, &[]).unwrap();
                            let bytes = format!("export {i} of round {round}").into_bytes();
                            sink.write_all(&bytes).unwrap();
                            let parts = sink.finish().unwrap();
                            (name, parts[0].path.clone(), bytes)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert_ne!(written[0].0, written[1].0, "round {round}: both exports took {}", written[0].0);
            for (name, path, bytes) in &written {
                assert_eq!(&std::fs::read(path).unwrap(), bytes, "round {round}: {name}");
            }
        }
    }
}
