//! MirrorSet documents: target, schedule, platforms, images with their tag selection, and
//! signature policy; every fixed mirror tag claimed by exactly one set.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use regex::Regex;

use super::{Checker, Document, regex_problem};
use crate::desired::image::{self, Digest, Repository, Source as ImageSource, Target};
use crate::desired::raw;
use crate::desired::{
    DEFAULT_MIRROR_SCHEDULE, IdentityMatch, KeylessIdentity, MirrorImage, MirrorSet, Platforms, Selection, Signatures,
    TagRules,
};

impl Checker<'_> {
    pub(super) fn mirror_set(
        &mut self,
        doc: &Document<'_>,
        name: &str,
        spec: &raw::MirrorSetSpec,
    ) -> Option<MirrorSet> {
        let before = self.errors();
        let target = self.field(doc, "spec.target", Target::parse(&spec.target));
        let schedule = self.schedule(doc, "spec.schedule", spec.schedule.as_deref().unwrap_or(DEFAULT_MIRROR_SCHEDULE));
        let platforms = match &spec.platforms {
            None | Some(raw::Platforms::All) => Platforms::All,
            Some(raw::Platforms::Only(list)) => {
                if list.is_empty() {
                    self.diags.push(
                        doc.diagnostic("spec.platforms", "the platform list is empty")
                            .hint("write `platforms: all`, or list platforms such as [linux/amd64]"),
                    );
                }
                for (i, p) in list.iter().enumerate() {
                    self.field(doc, &format!("spec.platforms[{i}]"), check_platform(p));
                }
                Platforms::Only(list.iter().cloned().collect())
            }
        };
        if spec.images.is_empty() {
            self.warn(doc, "spec.images", "this MirrorSet has no images");
        }
        let mut images = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, raw_image) in spec.images.iter().enumerate() {
            let path = format!("spec.images[{i}]");
            let Some(image) = self.mirror_image(doc, &path, raw_image) else {
                continue;
            };
            if matches!(image.selection, Selection::Tags { .. }) {
                if let Some(first) = seen.insert(image.source.to_string(), i) {
                    self.diags.push(
                        doc.diagnostic(
                            &format!("{path}.source"),
                            format!("`{}` is already listed at spec.images[{first}]", image.source),
                        )
                        .hint("list each repository once, with all its tags and rules"),
                    );
                    continue;
                }
            }
            if let Some(target) = &target {
                let repository = target.repository_for(&image.source);
                if !self.claim_mirror_repository(doc, &format!("{path}.source"), &repository, &image.source, name) {
                    continue;
                }
                // Where each tag is first written, looked up once per tag: a set may list
                // tens of thousands.
                let mut written_at: HashMap<&str, usize> = HashMap::new();
                for (t, tag) in raw_image.tags.iter().flatten().enumerate() {
                    written_at.entry(tag.as_str()).or_insert(t);
                }
                for tag in image.fixed_tags() {
                    let tag_path = match written_at.get(tag) {
                        Some(t) => format!("{path}.tags[{t}]"),
                        None => format!("{path}.tag"),
                    };
                    self.claim_target_tag(doc, &tag_path, format!("{repository}:{tag}"), name);
                }
            }
            images.push(image);
        }
        let signatures = self.signatures(doc, spec.signatures.as_ref());
        if self.errors() != before {
            return None;
        }
        Some(MirrorSet {
            origin: doc.origin(),
            target: target?,
            schedule: schedule?,
            platforms,
            images,
            signatures,
            on_tag_move: spec.on_tag_move.unwrap_or(raw::OnTagMove::Update),
            prune: spec.prune.unwrap_or(false),
        })
    }

    /// Records that `doc` mirrors `source` into `repository`. Two upstream repositories sharing
    /// one mirror repository (`docker.io/library/x` and `quay.io/library/x` under one target)
    /// would overwrite and prune each other's tags: an error.
    fn claim_mirror_repository(
        &mut self,
        doc: &Document<'_>,
        path: &str,
        repository: &Repository,
        source: &Repository,
        set: &str,
    ) -> bool {
        let line = doc.index.find(path).map_or(1, |p| p.line);
        let writer = format!("MirrorSet/{set} ({}:{line})", doc.file.display);
        match self.mirror_repos.get(&repository.to_string()) {
            Some((other, first)) if *other != source.to_string() => {
                self.diags.push(
                    doc.diagnostic(path, format!("`{source}` would be mirrored to `{repository}`, where {first} already mirrors `{other}`"))
                        .hint("give one of the sets another target, so that each upstream repository has its own mirror repository"),
                );
                false
            }
            Some(_) => true,
            None => {
                self.mirror_repos.insert(repository.to_string(), (source.to_string(), writer));
                true
            }
        }
    }

    /// Records that `doc` writes `reference` into the mirror; two writers of one tag is an error.
    fn claim_target_tag(&mut self, doc: &Document<'_>, path: &str, reference: String, set: &str) {
        let line = doc.index.find(path).map_or(1, |p| p.line);
        let writer = format!("MirrorSet/{set} ({}:{line})", doc.file.display);
        if let Some(first) = self.target_tags.get(&reference) {
            let message = format!("`{reference}` is also written by {first}");
            self.diags.push(doc.diagnostic(path, message).hint(
                "each mirror tag must come from one image of one set: drop one, or give the sets different targets",
            ));
        } else {
            self.target_tags.insert(reference, writer);
        }
    }

    fn mirror_image(&mut self, doc: &Document<'_>, path: &str, raw: &raw::MirrorImage) -> Option<MirrorImage> {
        let source = self.field(doc, &format!("{path}.source"), ImageSource::parse(&raw.source))?;
        let selection = match source.digest {
            Some(digest) => self.pinned(doc, path, raw, digest)?,
            None => self.tag_selection(doc, path, raw)?,
        };
        Some(MirrorImage { source: source.repository, selection })
    }

    fn pinned(&mut self, doc: &Document<'_>, path: &str, raw: &raw::MirrorImage, digest: Digest) -> Option<Selection> {
        if raw.tags.is_some() || raw.tag_rules.is_some() {
            self.diags.push(
                doc.diagnostic(&format!("{path}.source"), "a digest pin cannot also select tags")
                    .hint("use `tag:` to name the pinned image in the mirror, or drop the digest to select tags"),
            );
            return None;
        }
        let Some(tag) = &raw.tag else {
            self.diags.push(
                doc.diagnostic(&format!("{path}.source"), "a digest pin needs the tag it gets in the mirror")
                    .hint("add `tag: <name>` to this image, such as `tag: 20-pinned`"),
            );
            return None;
        };
        self.field(doc, &format!("{path}.tag"), image::validate_tag(tag))?;
        Some(Selection::Pinned { digest, tag: tag.clone() })
    }

    fn tag_selection(&mut self, doc: &Document<'_>, path: &str, raw: &raw::MirrorImage) -> Option<Selection> {
        if raw.tag.is_some() {
            self.diags.push(
                doc.diagnostic(
                    &format!("{path}.tag"),
                    "`tag` names the mirror tag of a digest pin, and this source has no digest",
                )
                .hint("write `tags: [\"...\"]` to mirror tags, or pin `source: repo@sha256:...`"),
            );
            return None;
        }
        let before = self.errors();
        let mut tags = BTreeSet::new();
        for (i, tag) in raw.tags.iter().flatten().enumerate() {
            if self.field(doc, &format!("{path}.tags[{i}]"), image::validate_tag(tag)).is_some()
                && !tags.insert(tag.clone())
            {
                self.warn(doc, &format!("{path}.tags[{i}]"), format!("tag `{tag}` is listed twice"));
            }
        }
        let rules = raw.tag_rules.as_ref().map(|r| self.tag_rules(doc, &format!("{path}.tagRules"), r));
        if raw.tags.as_ref().is_none_or(Vec::is_empty) && raw.tag_rules.is_none() {
            self.diags.push(
                doc.diagnostic(&format!("{path}.source"), format!("no tags are selected for `{}`", raw.source))
                    .hint("add `tags: [\"1.2\"]`, `tagRules: {semver: \">=1.2\"}`, or pin a digest with `source: repo@sha256:...` and `tag:`"),
            );
        }
        (self.errors() == before).then(|| Selection::Tags { tags, rules: rules.flatten() })
    }

    fn tag_rules(&mut self, doc: &Document<'_>, path: &str, raw: &raw::TagRules) -> Option<TagRules> {
        let before = self.errors();
        let semver = raw.semver.as_ref().and_then(|s| {
            self.field(doc, &format!("{path}.semver"), semver::VersionReq::parse(s).map_err(|e| format!(
                    "`{s}` is not a semantic-version range: {e}; write comparators separated by commas, such as `>=3.12, <3.14`"
                )))
        });
        let mut regexes = |list: &[String], field: &str| -> Vec<Regex> {
            list.iter()
                .enumerate()
                .filter_map(|(i, pattern)| {
                    self.field(
                        doc,
                        &format!("{path}.{field}[{i}]"),
                        Regex::new(pattern).map_err(|e| regex_problem(pattern, &e)),
                    )
                })
                .collect()
        };
        let allow = regexes(&raw.allow, "allow");
        let deny = regexes(&raw.deny, "deny");
        if raw.keep_latest == Some(0) {
            self.diags.push(
                doc.diagnostic(&format!("{path}.keepLatest"), "keepLatest 0 would select no tag")
                    .hint("give at least 1, or leave it out to keep every matching tag"),
            );
        }
        if raw.semver.is_none() && raw.allow.is_empty() && raw.keep_latest.is_none() {
            self.warn(
                doc,
                path,
                "these rules select every upstream tag; add semver, allow or keepLatest to bound the set",
            );
        }
        (self.errors() == before).then_some(TagRules { semver, allow, deny, keep_latest: raw.keep_latest })
    }

    fn signatures(&mut self, doc: &Document<'_>, raw: Option<&raw::Signatures>) -> Signatures {
        let Some(raw) = raw else {
            return Signatures {
                policy: raw::SignaturePolicy::Off,
                keys: BTreeSet::new(),
                keyless: Vec::new(),
                trust_root: None,
                annotations: BTreeMap::new(),
                copy: true,
            };
        };
        let keys: BTreeSet<String> = raw
            .keys
            .iter()
            .enumerate()
            .filter_map(|(i, k)| self.repo_file(doc, &format!("spec.signatures.keys[{i}]"), k))
            .collect();
        let mut keyless = Vec::new();
        for (i, k) in raw.keyless.iter().enumerate() {
            let path = format!("spec.signatures.keyless[{i}]");
            if !k.issuer.starts_with("https://") {
                self.diags.push(
                    doc.diagnostic(&format!("{path}.issuer"), format!("issuer `{}` is not an https URL", k.issuer))
                        .hint("give the OIDC issuer URL, such as https://token.actions.githubusercontent.com"),
                );
            }
            let identity = match (&k.identity, &k.identity_regex) {
                (Some(exact), None) => Some(IdentityMatch::Exact(exact.clone())),
                (None, Some(pattern)) => self.field(
                    doc,
                    &format!("{path}.identityRegex"),
                    Regex::new(pattern).map(IdentityMatch::Regex).map_err(|e| regex_problem(pattern, &e)),
                ),
                _ => {
                    self.diags.push(
                        doc.diagnostic(&path, "a keyless identity needs exactly one of identity or identityRegex")
                            .hint("identity matches exactly; identityRegex matches a pattern such as `^https://github.com/vendor/`"),
                    );
                    None
                }
            };
            if let Some(identity) = identity {
                keyless.push(KeylessIdentity { issuer: k.issuer.clone(), identity });
            }
        }
        let trust_root = raw.trust_root.as_ref().and_then(|t| self.repo_file(doc, "spec.signatures.trustRoot", t));
        if !raw.keyless.is_empty() && raw.trust_root.is_none() {
            self.diags.push(
                doc.diagnostic("spec.signatures.keyless", "keyless verification needs a trust root")
                    .hint("commit the Sigstore trusted_root.json and name it in spec.signatures.trustRoot"),
            );
        }
        let has_verifiers = !raw.keys.is_empty() || !raw.keyless.is_empty();
        let policy = raw.policy.unwrap_or(if has_verifiers {
            raw::SignaturePolicy::Required
        } else {
            raw::SignaturePolicy::Off
        });
        match policy {
            raw::SignaturePolicy::Off if has_verifiers => {
                self.warn(
                    doc,
                    "spec.signatures.policy",
                    "signature checks are off: the keys and identities listed are not used",
                );
            }
            raw::SignaturePolicy::Required | raw::SignaturePolicy::Optional if !has_verifiers => {
                self.diags.push(
                    doc.diagnostic(
                        "spec.signatures",
                        "a signature policy needs keys or keyless identities to check against",
                    )
                    .hint("add `keys: [keys/vendor.pub]` or `keyless:`, or set `policy: off`"),
                );
            }
            _ => {}
        }
        Signatures {
            policy,
            keys,
            keyless,
            trust_root,
            annotations: raw.annotations.clone(),
            copy: raw.copy.unwrap_or(true),
        }
    }
}

fn check_platform(platform: &str) -> Result<(), String> {
    let parts: Vec<&str> = platform.split('/').collect();
    let ok = (2..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
    if ok {
        Ok(())
    } else {
        Err(format!("`{platform}` is not a platform: write os/arch or os/arch/variant, such as linux/arm64/v8"))
    }
}
