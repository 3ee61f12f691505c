//! `--shard I/N` against real registries: N processes, each given its shard, together mirror
//! what one unsharded pass would, each copying only its own repositories.

use std::collections::BTreeSet;

use crate::mirror::{World, change_count, rt};
use crate::support::images::layer;

const REPOS: usize = 8;

fn spec() -> String {
    let images: String = (0..REPOS).map(|r| format!("    - source: \"UP/app{r}\"\n      tags: [\"1.0\"]\n")).collect();
    format!("  images:\n{images}")
}

fn targets(value: &serde_json::Value, key: &str) -> BTreeSet<String> {
    value[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.pointer("/change/action/target").or_else(|| c.pointer("/action/target")).unwrap().to_string())
        .collect()
}

#[test]
fn shards_share_a_pass_with_no_coordination() {
    let world = World::new();
    rt().block_on(async {
        let up = world.up();
        for r in 0..REPOS {
            up.image(&format!("app{r}"), Some("1.0"), &[layer(3000 + r as u64, 1024)], "linux/amd64").await;
        }
    });
    world.desired(&spec());
    let (_, whole) = world.plan();
    assert_eq!(change_count(&whole), REPOS, "{whole:#}");

    let mut seen = BTreeSet::new();
    for index in 0..3 {
        let shard = format!("{index}/3");
        let (_, planned, _) = world.run("plan", &["--shard", &shard]);
        let (code, applied, stderr) = world.run("apply", &["--shard", &shard]);
        assert_eq!(code, 0, "{applied:#}\n{stderr}");
        assert!(stderr.contains(&format!("shard {shard}: status not published")), "{stderr}");
        let copied = targets(&applied, "outcomes");
        assert_eq!(copied, targets(&planned, "changes"), "the shard applies what it planned");
        assert!(seen.is_disjoint(&copied), "two shards copied one repository: {copied:?}");
        seen.extend(copied);
    }
    assert_eq!(seen, targets(&whole, "changes"), "the shards together did the whole pass");
    let (code, after) = world.plan();
    assert_eq!((code, change_count(&after)), (0, 0), "{after:#}");

    let run = crate::support::lifeboat(&["plan", world.dir.path().to_str().unwrap(), "--shard", "3/3"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("numbered 0 to 2"), "{}", run.stderr);
}
