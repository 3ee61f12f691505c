//! `lifeboat diff`: what a change to the desired state between two Git revisions will do,
//! offline, from Git objects alone.

use super::{exit, report_invalid, write_out};
use crate::cli::{DiffArgs, Output};
use crate::desired::{self, DesiredState, LoadError};
use crate::diff;
use crate::diff::render as diff_render;
use crate::git::TreeSource;

/// Loads one revision, reporting its diagnostics when it is invalid.
fn load_revision(args: &DiffArgs, rev: &str, output: Output) -> anyhow::Result<Option<(TreeSource, DesiredState)>> {
    let source = TreeSource::read(&args.repo, rev, args.path.as_deref())?;
    match desired::load(&source) {
        Ok(state) => Ok(Some((source, state))),
        Err(LoadError::Invalid(diags)) => {
            report_invalid(&diags, output, Some(rev))?;
            Ok(None)
        }
        Err(LoadError::Read(e)) => Err(e),
    }
}

pub fn diff(args: &DiffArgs, output: Output) -> anyhow::Result<u8> {
    let shown = args.repo.display().to_string();
    if shown.contains("://") || (shown.contains('@') && shown.contains(':')) {
        anyhow::bail!(
            "--repo {} is a remote URL; `lifeboat diff` reads a local clone: give --repo PATH of one (in CI, the checkout)",
            crate::git::redact_url(&shown)
        );
    }
    let Some((base_source, base)) = load_revision(args, &args.base, output)? else {
        return Ok(exit::ERROR);
    };
    let Some((head_source, head)) = load_revision(args, &args.head, output)? else {
        return Ok(exit::ERROR);
    };
    let changes = diff::compare(&base, &head);
    tracing::info!(
        base = %base_source.commit,
        head = %head_source.commit,
        changes = changes.changes.len(),
        "compared desired states"
    );
    let report = diff_render::Report::new(
        diff_render::Revision { rev: base_source.rev, commit: base_source.commit },
        diff_render::Revision { rev: head_source.rev, commit: head_source.commit },
        &changes,
    );
    write_out(&match output {
        Output::Human => diff_render::human(&report),
        Output::Json => diff_render::json(&report),
        Output::Markdown => diff_render::markdown(&report),
    })?;
    Ok(if changes.is_empty() { exit::OK } else { exit::ATTENTION })
}
