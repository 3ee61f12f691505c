//! `lifeboat plan` and `lifeboat apply`: one pass, dry or not, through [`crate::reconcile`],
//! printed for people or machines.

use super::{exit, json, report_invalid, runtime, warn, write_out};
use crate::cli::{ApplyArgs, Output, PlanArgs};
use crate::outcome::totals;
use crate::plan::render;
use crate::prepull::report as prepull_report;
use crate::reconcile::{self, Loaded, Pass};
use crate::repo::Repo;
use crate::shard::Shard;

pub fn plan(args: &PlanArgs, output: Output) -> anyhow::Result<u8> {
    let repo = Repo::new(&super::source(&args.source, None)?)?;
    runtime()?.block_on(async {
        let setup = super::setup(&args.registry, &args.cluster).await;
        let ctx = match reconcile::load(&repo, &setup).await? {
            Loaded::Valid(ctx) => ctx,
            Loaded::Invalid(invalid) => {
                report_invalid(&invalid.diagnostics, output, invalid.commit.as_deref())?;
                return Ok(exit::ERROR);
            }
        };
        warn(&ctx.state.warnings);
        let ctx = match args.shard {
            Some(shard) => Box::new(ctx.sharded(shard)),
            None => ctx,
        };
        let pass = reconcile::dry_run(&ctx).await;
        print_plan(&pass, output)?;
        Ok(exit::of(pass.result()))
    })
}

pub fn apply(args: &ApplyArgs, output: Output) -> anyhow::Result<u8> {
    if args.dry_run {
        let plan = PlanArgs {
            source: args.source.clone(),
            registry: args.registry.clone(),
            cluster: args.cluster.clone(),
            shard: args.shard,
        };
        return self::plan(&plan, output);
    }
    if let Some(shard) = args.shard {
        return apply_shard(args, shard, output);
    }
    let repo = Repo::new(&super::source(&args.source, Some(&args.status))?)?;
    let heartbeat = args.status.heartbeat.and_then(|h| chrono::Duration::from_std(h).ok());
    let once = runtime()?.block_on(async {
        let setup = super::setup(&args.registry, &args.cluster).await;
        reconcile::once(&repo, &setup, heartbeat).await
    })?;
    let code = match &once.loaded {
        Err(invalid) => {
            report_invalid(&invalid.diagnostics, output, invalid.commit.as_deref())?;
            exit::ERROR
        }
        Ok(pass) => {
            print_applied(pass, output)?;
            exit::of(pass.result())
        }
    };
    match &once.published {
        Some(crate::git::Published::Committed { commit, .. }) => eprintln!("status committed: {commit}"),
        Some(crate::git::Published::Unchanged) => eprintln!("status unchanged: no commit"),
        None => {}
    }
    Ok(code)
}

/// `apply --shard`: the shard's part of the mirror, printed as `apply` prints a pass; no status.
fn apply_shard(args: &ApplyArgs, shard: Shard, output: Output) -> anyhow::Result<u8> {
    let repo = Repo::new(&super::source(&args.source, None)?)?;
    let loaded = runtime()?.block_on(async {
        let setup = super::setup(&args.registry, &args.cluster).await;
        reconcile::shard(&repo, &setup, shard).await
    })?;
    match loaded {
        Err(invalid) => {
            report_invalid(&invalid.diagnostics, output, invalid.commit.as_deref())?;
            Ok(exit::ERROR)
        }
        Ok(pass) => {
            print_applied(&pass, output)?;
            eprintln!("shard {shard}: status not published (the pass combining the shards writes it)");
            Ok(exit::of(pass.result()))
        }
    }
}

/// The pre-pull part for people, when there is anything to say.
fn pre_pull_text(pass: &Pass) -> Option<String> {
    (!pass.pre_pull.is_empty()).then(|| prepull_report::human(&pass.pre_pull))
}

fn print_plan(pass: &Pass, output: Output) -> anyhow::Result<()> {
    let plan = &pass.mirror.plan;
    write_out(&match output {
        Output::Human => match pre_pull_text(pass) {
            Some(pre) => format!("{}\n{pre}", render::human(plan)),
            None => render::human(plan),
        },
        Output::Json => {
            let mut value = serde_json::to_value(plan)?;
            value["prePull"] = serde_json::to_value(&pass.pre_pull)?;
            value["result"] = pass.result().label().into();
            json(&value)
        }
        Output::Markdown => match pre_pull_text(pass) {
            Some(pre) => format!("{}\n#### Pre-pull\n\n```\n{pre}```\n", render::markdown(plan)),
            None => render::markdown(plan),
        },
    })
}

fn print_applied(pass: &Pass, output: Output) -> anyhow::Result<()> {
    let outcomes = pass.mirror.outcomes.as_deref().unwrap_or_default();
    write_out(&match output {
        Output::Json => json(&serde_json::json!({
            "plan": pass.mirror.plan,
            "outcomes": outcomes,
            "totals": totals(outcomes),
            "prePull": pass.pre_pull,
            "result": pass.result().label(),
        })),
        Output::Human | Output::Markdown => {
            let applied = render::outcomes_human(&pass.mirror.plan, outcomes);
            match pre_pull_text(pass) {
                Some(pre) => format!("{applied}\n{pre}"),
                None => applied,
            }
        }
    })
}
