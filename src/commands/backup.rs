//! `backup export|verify|list` and `restore`: the air-gap tools, for the daemon's schedule and
//! for an operator's hands during an incident.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use super::{exit, json, report_invalid, runtime, write_out};
use crate::backup::restore::{self, Checked, Destination};
use crate::backup::sink::{self, Identities};
use crate::backup::{archive, catalog, job};
use crate::cli::{BackupExportArgs, BackupVerifyArgs, IdentityArgs, Output, RestoreArgs};
use crate::desired::{self, DesiredState};
use crate::readiness::Readiness;
use crate::reconcile::{self, Loaded};
use crate::registry::cosign::{TrustPolicy, TrustedKey};
use crate::registry::{RegistryClient, Verdict};
use crate::repo::Repo;

/// A byte-count progress bar on stderr, drawn only when stderr is a terminal; without a total
/// (export learns its size as it goes), a running count.
fn progress_bar(total: Option<u64>, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(total, indicatif::ProgressDrawTarget::stderr());
    let template = match total {
        Some(_) => "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {eta}",
        None => "{msg} {binary_bytes} {binary_bytes_per_sec}",
    };
    bar.set_style(indicatif::ProgressStyle::with_template(template).expect("a valid template").progress_chars("=> "));
    bar.set_message(what.to_string());
    bar
}

fn identities(args: &IdentityArgs) -> anyhow::Result<Identities> {
    if args.files.is_empty() { Ok(Identities::none()) } else { Identities::load(&args.files) }
}

pub fn export(args: &BackupExportArgs, output: Output) -> anyhow::Result<u8> {
    let repo = Repo::new(&super::source(&args.source, None)?)?;
    let rt = runtime()?;
    let ctx = match rt.block_on(reconcile::load(&repo, &super::registry_setup(&args.registry)))? {
        Loaded::Valid(ctx) => ctx,
        Loaded::Invalid(invalid) => {
            report_invalid(&invalid.diagnostics, output, invalid.commit.as_deref())?;
            return Ok(exit::ERROR);
        }
    };
    super::warn(&ctx.state.warnings);
    let state = &ctx.state;
    let Some(spec) = state.backup_policies.get(&args.policy).cloned() else {
        anyhow::bail!(
            "there is no BackupPolicy {} in the desired state; it has: {}",
            args.policy,
            names(state.backup_policies.keys())
        );
    };
    let destination = args.destination.clone().unwrap_or_else(|| PathBuf::from(&spec.destination));
    let base = match &args.base {
        Some(path) => Some(base_name(path, &destination)?),
        None => None,
    };
    let job = job::Job {
        policy: args.policy.clone(),
        spec,
        destination,
        base,
        signer: super::signer(&args.signing)?.map(Arc::new),
        identities: Arc::new(identities(&args.identities)?),
        desired_revision: Some(ctx.revision()),
    };
    let bar = progress_bar(None, "exporting");
    let counter = bar.clone();
    let exported = rt.block_on(reconcile::export_backup(&ctx, job, move |n| counter.inc(n)))?;
    bar.finish_and_clear();
    let record = &exported.record;
    let passed = exported.problems.is_empty();
    write_out(&match output {
        Output::Json => json(&serde_json::json!({
            "archive": exported.path.display().to_string(),
            "record": record,
            "missing": exported.missing,
            "problems": exported.problems,
            "pruned": exported.pruned,
        })),
        Output::Human | Output::Markdown => {
            let mut text = format!(
                "{}: {} ({} images, {} blobs, {} in {} part{}{}{})\n  aggregate sha256 {}\n  integrity {} ({})\n",
                if passed { "written" } else { "FAILED VERIFICATION" },
                exported.path.display(),
                record.images,
                record.blobs,
                bytesize::ByteSize(record.size),
                record.parts.len(),
                if record.parts.len() == 1 { "" } else { "s" },
                if record.encrypted { ", encrypted" } else { "" },
                record.base.as_ref().map(|b| format!(", incremental on {b}")).unwrap_or_default(),
                record.aggregate,
                if passed { "PASS" } else { "FAIL" },
                record.integrity.how.describe(),
            );
            for problem in &exported.problems {
                text.push_str(&format!("  problem: {problem}\n"));
            }
            for m in &exported.missing {
                text.push_str(&format!("  not in the archive: {}: {}\n", m.reference, m.reason));
            }
            for p in &exported.pruned {
                text.push_str(&format!("  retention deleted {}\n", p.display()));
            }
            text
        }
    })?;
    // Written and verified but incomplete: a person must get the missing images mirrored.
    Ok(match (passed, exported.missing.is_empty()) {
        (true, true) => exit::OK,
        (true, false) => exit::ATTENTION,
        (false, _) => exit::ERROR,
    })
}

fn names<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let list: Vec<&str> = names.map(String::as_str).collect();
    if list.is_empty() { "none".into() } else { list.join(", ") }
}

/// The archive name of `--base`, which must be in the destination folder.
fn base_name(path: &Path, destination: &Path) -> anyhow::Result<String> {
    let file = path.file_name().and_then(|n| n.to_str()).context("--base names no file")?;
    let name = catalog::archive_of(file)
        .with_context(|| format!("--base {}: not the name of an archive Lifeboat wrote", path.display()))?;
    let in_destination = destination.join(format!("{name}{}", catalog::RECORD_SUFFIX));
    anyhow::ensure!(
        in_destination.exists(),
        "--base {}: no record {} in the destination {}; the base must be an archive Lifeboat wrote there",
        path.display(),
        in_destination.display(),
        destination.display()
    );
    Ok(name.to_string())
}

/// Opens an archive for each pass over it.
fn opener(path: &Path, identities: &Arc<Identities>) -> restore::Opener {
    let path = path.to_path_buf();
    let identities = identities.clone();
    Arc::new(move || sink::open(&path, &identities))
}

pub fn verify(args: &BackupVerifyArgs, output: Output) -> anyhow::Result<u8> {
    let path = &args.archive;
    let identities = Arc::new(identities(&args.identities)?);
    let encrypted = sink::is_encrypted(path)?;
    let record = record_of(path);
    let (how, files, mut problems, metadata) = if encrypted && identities.is_empty() {
        let record = record.as_ref().with_context(|| {
            format!(
                "{} is encrypted and has no record beside it: give --identity FILE to decrypt and re-hash it",
                path.display()
            )
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        (catalog::IntegrityCheck::Stored, record.parts.len(), catalog::check_stored(dir, record)?, None)
    } else {
        let verification =
            archive::verify(opener(path, &identities)()?).with_context(|| format!("verifying {}", path.display()))?;
        (catalog::IntegrityCheck::Content, verification.files, verification.problems.clone(), Some(verification))
    };
    let mut signature = None;
    if let Some(key_path) = &args.key {
        let Some(v) = &metadata else {
            anyhow::bail!("checking the metadata signature needs the content: give --identity FILE");
        };
        let pem = std::fs::read(key_path).with_context(|| format!("reading --key {}", key_path.display()))?;
        let key = TrustedKey::from_pem(&key_path.display().to_string(), &pem)?;
        let ok = match (&v.metadata, &v.metadata_signature) {
            (Some(m), Some(s)) => key.verifies_blob(s, m),
            _ => false,
        };
        if !ok {
            problems.push(format!(
                "{} is not signed by {} ({})",
                archive::METADATA,
                key_path.display(),
                if v.metadata_signature.is_some() {
                    "the signature does not match"
                } else {
                    "the archive carries no signature"
                }
            ));
        }
        signature = Some(ok);
    }
    let passed = problems.is_empty();
    write_out(&match output {
        Output::Json => json(&serde_json::json!({
            "archive": path.display().to_string(),
            "result": Readiness::of(passed),
            "checked": how.describe(),
            "files": files,
            "metadataSigned": signature,
            "problems": problems,
        })),
        Output::Human | Output::Markdown if passed => format!(
            "PASS: {} ({} {})\n",
            path.display(),
            files,
            match how {
                catalog::IntegrityCheck::Content => "files match their checksums",
                catalog::IntegrityCheck::Stored =>
                    "encrypted parts match their recorded sha256; give --identity to re-hash the content",
            }
        ),
        Output::Human | Output::Markdown => {
            let mut text = format!("FAIL: {}\n", path.display());
            for problem in &problems {
                text.push_str(&format!("  {problem}\n"));
            }
            text
        }
    })?;
    Ok(if passed { exit::OK } else { exit::ATTENTION })
}

/// The record beside an archive (given by its path or its first part), if any.
fn record_of(path: &Path) -> Option<catalog::Record> {
    let name = catalog::archive_of(path.file_name()?.to_str()?)?;
    catalog::Record::read(&path.with_file_name(format!("{name}{}", catalog::RECORD_SUFFIX))).ok()
}

pub fn restore(args: &RestoreArgs, output: Output) -> anyhow::Result<u8> {
    let to: Destination = args.to.parse().map_err(anyhow::Error::msg)?;
    let identities = Arc::new(identities(&args.identities)?);
    let rt = runtime()?;
    let started = std::time::Instant::now();
    // Verify the archive and every archive it builds on before pushing anything.
    let mut chain: Vec<Checked> = Vec::new();
    let mut next = Some(args.archive.clone());
    while let Some(path) = next.take() {
        eprintln!("verifying {} ...", path.display());
        let checked = rt.block_on(restore::check(path.display().to_string(), opener(&path, &identities)))?;
        if let Some(base) = &checked.metadata.base {
            anyhow::ensure!(
                chain.len() < 100 && !chain.iter().any(|c| c.metadata.base.as_deref() == Some(base.as_str())),
                "the archives built on {base} form a loop"
            );
            let base_path = path.with_file_name(base);
            let first = sink::files(&base_path).map(|f| f.into_iter().next());
            let Ok(Some(found)) = first else {
                anyhow::bail!(
                    "{} is incremental: it builds on {base}, which is not in {}; put that archive (and any it builds on) beside it",
                    path.display(),
                    base_path.parent().unwrap_or(Path::new(".")).display()
                );
            };
            next = Some(found);
        }
        chain.push(checked);
    }
    let mut state = DesiredState::default();
    state.registries.insert(
        to.host.clone(),
        desired::Registry {
            origin: desired::Origin { file: "--to".into(), line: 0 },
            host: to.host.clone(),
            insecure: args.insecure,
            ca_file: None,
            credentials: args.authfile.as_ref().map(|f| desired::Credentials::DockerConfig(f.display().to_string())),
            limits: desired::Limits::default(),
        },
    );
    // One restore is one pass: a registry that stops answering is given up on at once.
    let client = RegistryClient::new(&state, None, super::registry_options(&args.registry))?.for_pass();
    let total = chain.iter().map(|c| c.metadata.blobs.stored_bytes).sum();
    let bar = progress_bar(Some(total), "restoring");
    let summary = rt.block_on(restore::restore(&client, &chain, &to, &|n| bar.inc(n)))?;
    bar.finish_and_clear();

    // Optionally check each restored image's signature where it now lives.
    let mut verdicts = Vec::new();
    if !args.keys.is_empty() {
        let mut policy = TrustPolicy::default();
        for path in &args.keys {
            let pem = std::fs::read(path).with_context(|| format!("reading --key {}", path.display()))?;
            policy.keys.push(TrustedKey::from_pem(&path.display().to_string(), &pem)?);
        }
        for image in &chain[0].metadata.images {
            let repository = to.repository(&image.path);
            let verdict = rt.block_on(crate::registry::cosign::verify(&client, &policy, &repository, &image.digest))?;
            verdicts.push((format!("{repository}@{}", image.digest), verdict));
        }
    }
    let unverified = verdicts.iter().filter(|(_, v)| !matches!(v, Verdict::Verified { .. })).count();
    let seconds = started.elapsed().as_secs_f64();
    write_out(&match output {
        Output::Json => json(&serde_json::json!({
            "to": args.to,
            "summary": summary,
            "seconds": seconds,
            "signatures": verdicts.iter().map(|(i, v)| serde_json::json!({"image": i, "verification": v})).collect::<Vec<_>>(),
        })),
        Output::Human | Output::Markdown => {
            let mut text = format!(
                "restored {} images ({} tags) into {} in {seconds:.1}s\n  blobs: {} uploaded ({}), {} already present, {} mounted\n  manifests pushed: {}\n  archives read: {}\n",
                summary.images,
                summary.tags,
                args.to,
                summary.blobs_uploaded,
                bytesize::ByteSize(summary.bytes_uploaded),
                summary.blobs_present,
                summary.blobs_mounted,
                summary.manifests_pushed,
                summary.archives.join(", "),
            );
            for (image, verdict) in &verdicts {
                match verdict {
                    Verdict::Verified { signers } => {
                        text.push_str(&format!("  verified {image}: {}\n", Verdict::signers_text(signers)))
                    }
                    Verdict::Rejected { reason } => text.push_str(&format!("  NOT VERIFIED {image}: {reason}\n")),
                }
            }
            text
        }
    })?;
    // Restored; with --key, an image whose signatures do not verify where it now lives is the
    // answer "not verified", as `lifeboat verify` gives it.
    Ok(if unverified == 0 { exit::OK } else { exit::ATTENTION })
}

/// One line of `backup list`.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct BackupRow {
    archive: String,
    policy: String,
    time: String,
    size: u64,
    images: Option<u64>,
    /// PASS, FAIL or UNKNOWN: the recorded check, FAIL when a recorded part is missing or has
    /// another size, UNKNOWN without a record.
    integrity: Readiness,
    /// What the recorded check covered: `content`, or `stored` (the encrypted files only).
    checked: Option<crate::backup::catalog::IntegrityCheck>,
    checked_at: Option<String>,
    encryption: &'static str,
    parts: usize,
    base: Option<String>,
    note: Option<String>,
}

impl BackupRow {
    fn new(entry: &crate::backup::catalog::Entry) -> BackupRow {
        let time = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let record = entry.record();
        BackupRow {
            archive: entry.archive.clone(),
            policy: entry.policy.clone(),
            time: time(entry.created_at),
            size: entry.size(),
            images: record.map(|r| r.images),
            integrity: match record {
                None => Readiness::Unknown,
                Some(_) if !entry.complete() => Readiness::Fail,
                Some(r) => Readiness::of(r.passed()),
            },
            checked: record.map(|r| r.integrity.how),
            checked_at: record.map(|r| time(r.integrity.checked_at)),
            encryption: if entry.encrypted() { "age" } else { "none" },
            parts: entry.parts(),
            base: record.and_then(|r| r.base.clone()),
            note: entry.note(),
        }
    }
}

pub fn list(dir: &std::path::Path, output: Output) -> anyhow::Result<u8> {
    use crate::backup::catalog::IntegrityCheck;
    let rows: Vec<BackupRow> = crate::backup::catalog::scan(dir)?.iter().rev().map(BackupRow::new).collect();
    if output == Output::Json {
        write_out(&json(&rows))?;
        return Ok(exit::OK);
    }
    if rows.is_empty() {
        write_out(&format!("no backup archives in {}\n", dir.display()))?;
        return Ok(exit::OK);
    }
    let header = ["ARCHIVE", "TIME", "SIZE", "IMAGES", "INTEGRITY", "ENCRYPTION", "PARTS", "BASE"].map(String::from);
    let lines: Vec<[String; 8]> = std::iter::once(header)
        .chain(rows.iter().map(|row| {
            let stored = row.checked == Some(IntegrityCheck::Stored) && row.note.is_none();
            [
                row.archive.clone(),
                row.time.clone(),
                bytesize::ByteSize(row.size).to_string(),
                row.images.map_or("-".into(), |n| n.to_string()),
                if stored { format!("{} (stored)", row.integrity) } else { row.integrity.to_string() },
                row.encryption.to_string(),
                row.parts.to_string(),
                row.base.clone().unwrap_or_else(|| "-".into()),
            ]
        }))
        .collect();
    let mut widths = [0; 8];
    for line in &lines {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for line in &lines {
        let cells: Vec<String> = line.iter().zip(widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    let notes: Vec<String> =
        rows.iter().filter_map(|row| row.note.as_ref().map(|note| format!("{}: {note}\n", row.archive))).collect();
    if !notes.is_empty() {
        text.push('\n');
        text.push_str(&notes.concat());
    }
    write_out(&text)?;
    Ok(exit::OK)
}
