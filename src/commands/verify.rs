//! `lifeboat verify IMAGE`: the cosign signatures of one image, for incident use. Only the
//! image's registry is contacted.

use anyhow::Context;

use super::{exit, json, runtime, write_out};
use crate::cli::{Output, VerifyArgs};
use crate::desired::{self, DesiredState, DirectorySource, LoadError};
use crate::registry::{RegistryClient, TrustPolicy, Verdict};

/// Builds the signers `lifeboat verify` accepts from its flags, or from a MirrorSet.
fn verify_policy(args: &VerifyArgs, state: &DesiredState) -> anyhow::Result<TrustPolicy> {
    use crate::registry::cosign::{TrustRoot, TrustedKey};
    if let Some(set) = &args.mirror_set {
        let dir = args.dir.clone().unwrap_or_default();
        anyhow::ensure!(
            state.mirror_sets.contains_key(set),
            "MirrorSet {set} is not in the desired state at {}; give one of: {}",
            dir.display(),
            state.mirror_sets.keys().cloned().collect::<Vec<_>>().join(", ")
        );
        let mut policies = crate::registry::cosign::policies(state, |file| Ok(std::fs::read(dir.join(file))?))?;
        return policies
            .remove(set)
            .ok_or_else(|| anyhow::anyhow!("MirrorSet {set} checks no signatures (its policy is off)"));
    }
    let mut policy = TrustPolicy::default();
    for path in &args.keys {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).with_context(|| format!("reading --key {name}"))?;
        policy.keys.push(TrustedKey::from_pem(&name, &bytes)?);
    }
    if let Some(issuer) = &args.issuer {
        let identity = match (&args.identity, &args.identity_regex) {
            (Some(exact), _) => desired::IdentityMatch::Exact(exact.clone()),
            (None, Some(pattern)) => {
                desired::IdentityMatch::Regex(regex::Regex::new(pattern).with_context(|| {
                    format!("--certificate-identity-regexp `{pattern}` is not a regular expression")
                })?)
            }
            (None, None) => anyhow::bail!(
                "--certificate-oidc-issuer needs --certificate-identity or --certificate-identity-regexp: the \
                 certificate identity to accept"
            ),
        };
        policy.keyless.push(desired::KeylessIdentity { issuer: issuer.clone(), identity });
        let root = args.trust_root.as_ref().ok_or_else(|| {
            anyhow::anyhow!("keyless verification needs --trust-root FILE (a Sigstore trusted_root.json)")
        })?;
        let bytes = std::fs::read(root).with_context(|| format!("reading --trust-root {}", root.display()))?;
        policy.trust_root = Some(TrustRoot::from_json(&root.display().to_string(), &bytes)?);
    }
    anyhow::ensure!(
        !policy.keys.is_empty() || !policy.keyless.is_empty(),
        "nothing to verify against: give --key FILE, or --certificate-identity/--certificate-identity-regexp with \
         --certificate-oidc-issuer and --trust-root, or --mirror-set NAME with --dir"
    );
    for pair in &args.annotations {
        let (k, v) = pair.split_once('=').ok_or_else(|| anyhow::anyhow!("--annotation `{pair}` is not KEY=VALUE"))?;
        policy.annotations.insert(k.to_string(), v.to_string());
    }
    Ok(policy)
}

pub fn verify(args: &VerifyArgs, output: Output) -> anyhow::Result<u8> {
    let image = desired::ImageRef::parse(&args.image).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut state = match &args.dir {
        Some(dir) => match desired::load(&DirectorySource::new(dir)?) {
            Ok(state) => {
                super::warn(&state.warnings);
                state
            }
            Err(LoadError::Invalid(diags)) => {
                super::report_invalid(&diags, output, None)?;
                return Ok(exit::ERROR);
            }
            Err(LoadError::Read(e)) => return Err(e),
        },
        None => DesiredState::default(),
    };
    let policy = verify_policy(args, &state)?;
    let host = image.repository.host.clone();
    if args.insecure {
        let registry = state.registries.entry(host.clone()).or_insert_with(|| desired::Registry {
            origin: desired::Origin { file: "--insecure".into(), line: 0 },
            host: host.clone(),
            insecure: true,
            ca_file: None,
            credentials: None,
            limits: desired::Limits::default(),
        });
        registry.insecure = true;
    }
    let client = RegistryClient::new(&state, args.dir.clone(), super::registry_options(&args.registry))?.for_pass();
    let repository = &image.repository;
    let outcome: anyhow::Result<(crate::desired::Digest, Verdict)> = runtime()?.block_on(async {
        let digest = match &image.digest {
            Some(d) => d.clone(),
            None => {
                let tag = image.tag.as_deref().unwrap_or("latest");
                client
                    .manifest_digest(repository, tag)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("{repository}:{tag} does not exist"))?
            }
        };
        let verdict = crate::registry::cosign::verify(&client, &policy, repository, &digest).await?;
        Ok((digest, verdict))
    });
    let (digest, verdict) = outcome?;
    write_out(&match output {
        Output::Json => json(&serde_json::json!({
            "image": args.image,
            "digest": digest,
            "verification": verdict,
        })),
        Output::Human | Output::Markdown => match &verdict {
            Verdict::Verified { signers } => {
                format!("Verified: {repository}@{digest}\n  signed by {}\n", Verdict::signers_text(signers))
            }
            Verdict::Rejected { reason } => format!("Not verified: {repository}@{digest}\n  {reason}\n"),
        },
    })?;
    Ok(match verdict {
        Verdict::Verified { .. } => exit::OK,
        Verdict::Rejected { .. } => exit::ATTENTION,
    })
}
