//! The round against an in-memory runtime that holds images in a set and counts its pulls.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;

use super::*;

const HOST: &str = "mirror.internal:5000";

fn image(n: u32) -> String {
    format!("{HOST}/app{n}@sha256:{:064x}", n)
}

/// A runtime in memory: what it holds, what each pull answers, and how many pulls ran at once.
#[derive(Default)]
struct FakeRuntime {
    held: Mutex<BTreeSet<String>>,
    /// Images whose pull fails with this error.
    failing: BTreeMap<String, PullError>,
    /// When set, pulls succeed only with these basic credentials and are otherwise refused.
    accepts: Option<(String, String)>,
    pulls: Mutex<Vec<(String, Credential)>>,
    running: AtomicUsize,
    most_at_once: AtomicUsize,
    version_error: bool,
    /// The runtime never answers Version, as a hung runtime does not.
    version_hangs: bool,
}

impl FakeRuntime {
    fn holding(images: &[String]) -> FakeRuntime {
        FakeRuntime { held: Mutex::new(images.iter().cloned().collect()), ..FakeRuntime::default() }
    }

    fn pulled(&self) -> Vec<String> {
        self.pulls.lock().unwrap().iter().map(|(r, _)| r.clone()).collect()
    }
}

impl ImageRuntime for FakeRuntime {
    async fn version(&self) -> anyhow::Result<String> {
        if self.version_hangs {
            std::future::pending::<()>().await;
        }
        if self.version_error {
            anyhow::bail!("asking the container runtime at /run/x.sock for its version: unknown service");
        }
        Ok("fake 1.0".into())
    }

    async fn image_present(&self, reference: &str) -> Result<bool, String> {
        Ok(self.held.lock().unwrap().contains(reference))
    }

    async fn pull(&self, reference: &str, credential: &Credential) -> Result<(), PullError> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(now, Ordering::SeqCst);
        self.pulls.lock().unwrap().push((reference.to_string(), credential.clone()));
        // Give the other pulls of the round a chance to start while this one runs.
        for _ in 0..5 {
            tokio::task::yield_now().await;
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
        if let Some(error) = self.failing.get(reference) {
            return Err(error.clone());
        }
        if let Some((user, password)) = &self.accepts {
            let ok =
                matches!(credential, Credential::Basic { username, password: p } if username == user && p == password);
            if !ok {
                // A runtime that echoes what it was given, to prove reasons are scrubbed.
                let sent = credential.secret().unwrap_or("nothing");
                return Err(PullError::Unauthorized(format!("401 Unauthorized (sent {sent})")));
            }
        }
        self.held.lock().unwrap().insert(reference.to_string());
        Ok(())
    }
}

struct Setup {
    dir: tempfile::TempDir,
    settings: Settings,
}

fn setup(images: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let images_file = dir.path().join("images");
    std::fs::write(&images_file, images).unwrap();
    let settings = Settings {
        node: "node-1".into(),
        set: "critical".into(),
        images_file,
        pull_secret_dir: None,
        kubelet_config: None,
        parallel: 4,
        pull_timeout: Duration::from_secs(60),
    };
    Setup { dir, settings }
}

fn states(inventory: &Inventory) -> Vec<(&str, &ImageState)> {
    inventory.images.iter().map(|i| (i.reference.as_str(), &i.state)).collect()
}

fn reason(state: &ImageState) -> &str {
    match state {
        ImageState::Missing { reason } => reason,
        other => panic!("expected Missing, got {other:?}"),
    }
}

/// Writes `DIR/<name>/.dockerconfigjson` with basic credentials for HOST.
fn secret(dir: &Path, name: &str, user: &str, password: &str) {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    std::fs::create_dir_all(dir.join(name)).unwrap();
    std::fs::write(
        dir.join(name).join(".dockerconfigjson"),
        format!(r#"{{"auths":{{"{HOST}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
}

#[tokio::test]
async fn present_images_are_not_pulled_and_absent_ones_are() {
    let s = setup(&format!("# the set's images\n{}\n\n{}  # pinned\n{}\n", image(2), image(1), image(2)));
    let runtime = FakeRuntime::holding(&[image(1)]);
    let inventory = round(&runtime, &s.settings).await.unwrap();
    assert_eq!(
        states(&inventory),
        [(image(1).as_str(), &ImageState::Present), (image(2).as_str(), &ImageState::Pulled)]
    );
    assert_eq!(runtime.pulled(), [image(2)], "only the absent image is pulled, once");
    assert_eq!((inventory.node.as_str(), inventory.set.as_str()), ("node-1", "critical"));
    assert_eq!(inventory.runtime.as_deref(), Some("fake 1.0"));

    // The next round finds both.
    let again = round(&runtime, &s.settings).await.unwrap();
    assert!(again.images.iter().all(|i| i.state == ImageState::Present), "{:?}", again.images);
    assert_eq!(runtime.pulled().len(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn pulls_run_in_parallel_up_to_the_bound_and_never_beyond() {
    let images: Vec<String> = (0..12).map(image).collect();
    for bound in [1, 3, 5] {
        let mut s = setup(&images.join("\n"));
        s.settings.parallel = bound;
        let runtime = FakeRuntime::default();
        let inventory = round(&runtime, &s.settings).await.unwrap();
        assert!(inventory.images.iter().all(|i| i.state == ImageState::Pulled));
        assert_eq!(runtime.pulled().len(), 12);
        assert_eq!(runtime.most_at_once.load(Ordering::SeqCst), bound, "pulls at once with --parallel {bound}");
    }
}

#[tokio::test]
async fn one_failing_image_does_not_stop_the_others() {
    let s = setup(&[image(1), image(2), image(3), image(4)].join("\n"));
    let runtime = FakeRuntime {
        failing: BTreeMap::from([
            (image(1), PullError::Unreachable("connection refused".into())),
            (image(2), PullError::NotFound("manifest unknown".into())),
            (image(3), PullError::Runtime("no space left on device".into())),
        ]),
        ..FakeRuntime::default()
    };
    let inventory = round(&runtime, &s.settings).await.unwrap();
    let states = states(&inventory);
    assert_eq!(
        reason(states[0].1),
        format!("registry {HOST} could not be reached to pull {}: connection refused", image(1))
    );
    assert!(reason(states[1].1).contains("does not have") && reason(states[1].1).contains(&image(2)));
    assert!(
        reason(states[2].1).contains("container runtime failed to pull") && reason(states[2].1).contains("no space")
    );
    assert_eq!(states[3].1, &ImageState::Pulled);
}

#[tokio::test]
async fn lines_that_are_not_digest_references_are_reported_not_pulled() {
    let s = setup(&format!("{HOST}/app:1.0\nnot a reference\n{}\n", image(1)));
    let runtime = FakeRuntime::default();
    let inventory = round(&runtime, &s.settings).await.unwrap();
    assert_eq!(runtime.pulled(), [image(1)]);
    let missing: Vec<&str> = inventory
        .images
        .iter()
        .filter_map(|i| match &i.state {
            ImageState::Missing { reason } => Some(reason.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(missing.len(), 2);
    assert!(missing.iter().any(|r| r.starts_with("line 1 of") && r.contains("no digest")), "{missing:?}");
    assert!(missing.iter().any(|r| r.starts_with("line 2 of")), "{missing:?}");
}

#[tokio::test]
async fn credentials_come_from_the_pull_secret_for_the_images_host() {
    let mut s = setup(&image(1));
    let secrets = s.dir.path().join("secrets");
    secret(&secrets, "a-stale", "robot", "old-password");
    secret(&secrets, "b-current", "robot", "new-password");
    std::fs::create_dir_all(secrets.join("..data")).unwrap();
    s.settings.pull_secret_dir = Some(secrets);
    let runtime = FakeRuntime { accepts: Some(("robot".into(), "new-password".into())), ..FakeRuntime::default() };
    let inventory = round(&runtime, &s.settings).await.unwrap();
    assert_eq!(inventory.images[0].state, ImageState::Pulled);
    let tried: Vec<Option<String>> =
        runtime.pulls.lock().unwrap().iter().map(|(_, c)| c.secret().map(str::to_string)).collect();
    assert_eq!(tried, [Some("old-password".to_string()), Some("new-password".to_string())], "secrets in name order");
}

#[tokio::test]
async fn refused_or_missing_credentials_say_so_without_the_secret() {
    let mut s = setup(&image(1));
    let runtime = FakeRuntime { accepts: Some(("robot".into(), "right".into())), ..FakeRuntime::default() };

    let without = round(&runtime, &s.settings).await.unwrap();
    let text = reason(&without.images[0].state);
    assert!(text.contains("without credentials") && text.contains("no pull secrets are mounted"), "{text}");

    let secrets = s.dir.path().join("secrets");
    secret(&secrets, "mirror", "robot", "wrong-hunter2");
    std::fs::create_dir_all(secrets.join("broken")).unwrap();
    std::fs::write(secrets.join("broken/.dockerconfigjson"), "{\"auths\": ").unwrap();
    s.settings.pull_secret_dir = Some(secrets.clone());
    let refused = round(&runtime, &s.settings).await.unwrap();
    let text = reason(&refused.images[0].state);
    assert!(text.contains("refused the credentials of every pull secret") && text.contains("mirror"), "{text}");
    assert!(!text.contains("wrong-hunter2"), "the password leaked: {text}");
    assert!(text.contains("<redacted>"), "{text}");

    // A secret for another host gives nothing; the reason names the directory and what was unreadable.
    std::fs::remove_dir_all(secrets.join("mirror")).unwrap();
    let none = round(&runtime, &s.settings).await.unwrap();
    let text = reason(&none.images[0].state);
    assert!(text.contains(&format!("no pull secret in {} has credentials for {HOST}", secrets.display())), "{text}");
    assert!(text.contains("broken/.dockerconfigjson"), "{text}");
}

#[tokio::test]
async fn the_kubelets_gc_settings_or_why_they_are_unknown() {
    let mut s = setup(&image(1));
    let runtime = FakeRuntime::default();
    let none = round(&runtime, &s.settings).await.unwrap();
    assert_eq!(none.kubelet_gc, None);
    assert!(none.kubelet_gc_error.unwrap().contains("--kubelet-config"));

    let yaml = s.dir.path().join("config.yaml");
    std::fs::write(&yaml, "kind: KubeletConfiguration\nimageGCHighThresholdPercent: 90\nimageMinimumGCAge: 48h0m0s\n")
        .unwrap();
    s.settings.kubelet_config = Some(yaml);
    let read = round(&runtime, &s.settings).await.unwrap();
    assert_eq!(
        read.kubelet_gc,
        Some(GcSettings {
            high_threshold_percent: Some(90),
            low_threshold_percent: Some(80),
            minimum_age_seconds: Some(172_800)
        })
    );
    assert_eq!(read.kubelet_gc_error, None);

    let json = s.dir.path().join("config.json");
    std::fs::write(&json, r#"{"kind": "KubeletConfiguration", "imageGCLowThresholdPercent": 70}"#).unwrap();
    assert_eq!(kubelet_gc(Some(&json)).await.unwrap().low_threshold_percent, Some(70));

    for (name, text, says) in [
        ("broken.yaml", "kind: [KubeletConfiguration\n", "not YAML or JSON"),
        ("odd.yaml", "imageMinimumGCAge: 5\n", "not a duration"),
    ] {
        let path = s.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let error = kubelet_gc(Some(&path)).await.unwrap_err();
        assert!(error.contains(&path.display().to_string()) && error.contains(says), "{error}");
    }
    let error = kubelet_gc(Some(&s.dir.path().join("absent.yaml"))).await.unwrap_err();
    assert!(error.contains("absent.yaml"), "{error}");
}

#[tokio::test]
async fn an_unreadable_images_file_or_a_silent_runtime_fails_the_round() {
    let mut s = setup("");
    s.settings.images_file = s.dir.path().join("missing");
    let error = round(&FakeRuntime::default(), &s.settings).await.unwrap_err();
    assert!(format!("{error:#}").contains(&s.settings.images_file.display().to_string()), "{error:#}");

    let s = setup(&image(1));
    let runtime = FakeRuntime { version_error: true, ..FakeRuntime::default() };
    assert!(round(&runtime, &s.settings).await.is_err());
    assert!(runtime.pulled().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_runtime_that_never_answers_fails_the_round_instead_of_holding_it() {
    let s = setup(&image(1));
    let runtime = FakeRuntime { version_hangs: true, ..FakeRuntime::default() };
    let error = round(&runtime, &s.settings).await.unwrap_err();
    assert!(error.to_string().contains("did not tell its version"), "{error:#}");
}
