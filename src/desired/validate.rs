//! The loader: YAML files → raw documents → a validated [`DesiredState`], or every problem.
//!
//! Stage one reads each document's header (`apiVersion`, `kind`, `metadata.name`) and its raw
//! typed form; stage two, knowing the name of every document, parses each value and checks the
//! references between documents. Nothing stops at the first problem: a broken document still
//! registers its name, so one typo does not cascade into "missing MirrorSet" noise elsewhere.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::str::FromStr;

use regex::Regex;

use super::diagnostic::{Diagnostic, Diagnostics, Position};
use super::image::{self, Digest, ImageRef, Source as ImageSource, Target};
use super::raw::{self, API_VERSION, KINDS};
use super::source::{Source, SourceFile};
use super::yaml::{self, PositionIndex, Segment};
use super::{
    BackupPolicy, Credentials, DEFAULT_MIRROR_SCHEDULE, DesiredState, Encryption, IdentityMatch, KeylessIdentity,
    Limits, LoadError, MirrorImage, MirrorSet, Origin, Period, Platforms, PrePullSet, Registry, Retention, Schedule,
    Selection, Signatures, Size, TagRules,
};

/// Mapping keys that can only hold a secret. Lifeboat never accepts one inline.
const SECRET_KEYS: [&str; 16] = [
    "password",
    "passwd",
    "pass",
    "token",
    "secret",
    "auth",
    "identitytoken",
    "registrytoken",
    "accesstoken",
    "refreshtoken",
    "apikey",
    "apitoken",
    "privatekey",
    "clientsecret",
    "secretkey",
    "secretaccesskey",
];

const SECRET_HINT: &str = "the desired state lives in Git and must never hold secrets: put credentials in a \
     Docker config.json (for example a mounted kubernetes.io/dockerconfigjson Secret) and name its path \
     in a Registry's spec.credentials.dockerConfig";

/// Loads and validates every YAML file of `source`.
pub fn load(source: &dyn Source) -> Result<DesiredState, LoadError> {
    let files = source.yaml_files()?;
    let mut diags = Diagnostics::default();
    if files.is_empty() {
        diags.push(
            Diagnostic::error(source.describe(), "no desired-state documents found (no *.yaml or *.yml files)").hint(
                "point Lifeboat at the folder that holds the Registry, MirrorSet, PrePullSet and BackupPolicy files",
            ),
        );
        return Err(LoadError::Invalid(diags));
    }
    let mut docs = Vec::new();
    for file in &files {
        match &file.text {
            Err(reason) => diags.push(Diagnostic::error(&file.display, reason.clone())),
            Ok(text) => {
                for (number, segment) in yaml::split_documents(text).into_iter().enumerate() {
                    if let Some(doc) = read_document(file, number + 1, segment, &mut diags) {
                        docs.push(doc);
                    }
                }
            }
        }
    }
    let names = Names::collect(&docs);
    let mut checker = Checker {
        source,
        names,
        diags,
        state: DesiredState::default(),
        first_doc: HashMap::new(),
        target_tags: BTreeMap::new(),
    };
    for doc in &docs {
        checker.check(doc);
    }
    let Checker { mut diags, mut state, .. } = checker;
    diags = diags.sorted();
    if diags.has_errors() {
        return Err(LoadError::Invalid(diags));
    }
    state.warnings = diags;
    Ok(state)
}

/// A document after stage one.
struct Document<'a> {
    file: &'a SourceFile,
    index: PositionIndex,
    kind: &'static str,
    name: Option<String>,
    /// `Kind/name`, or `Kind in document N` without a name.
    label: String,
    /// The typed document, when it deserialized.
    raw: Option<Raw>,
}

enum Raw {
    Registry(raw::RegistryDocument),
    MirrorSet(raw::MirrorSetDocument),
    PrePullSet(raw::PrePullSetDocument),
    BackupPolicy(raw::BackupPolicyDocument),
}

impl Document<'_> {
    fn diagnostic(&self, path: &str, message: impl Into<String>) -> Diagnostic {
        let mut d = Diagnostic::error(&self.file.display, message).at(self.index.find(path));
        d.document = Some(self.label.clone());
        d.path = (!path.is_empty()).then(|| path.to_string());
        d
    }

    fn origin(&self) -> Origin {
        Origin { file: self.file.display.clone(), line: self.index.find("kind").map_or(1, |p| p.line) }
    }
}

/// Stage one: header, secrets, typed deserialization. Returns `None` when the document cannot
/// even be classified (syntax error, not a mapping, unknown apiVersion or kind).
fn read_document<'a>(
    file: &'a SourceFile,
    number: usize,
    segment: Segment<'_>,
    diags: &mut Diagnostics,
) -> Option<Document<'a>> {
    let fallback_label = format!("document {number}");
    let located = |message: String, position: Option<Position>| {
        let mut d = Diagnostic::error(&file.display, message).at(position);
        d.document = Some(fallback_label.clone());
        d
    };
    let value: serde_yaml::Value = match yaml::from_segment(segment) {
        Ok(v) => v,
        Err(e) => {
            diags.push(
                located(format!("YAML syntax error: {}", e.message), e.position)
                    .hint("check indentation and quoting around this place; a `:` or `#` inside a value needs quotes"),
            );
            return None;
        }
    };
    let index = PositionIndex::build(segment);
    let Some(mapping) = value.as_mapping() else {
        report_secrets(&index, file, &fallback_label, diags);
        diags.push(
            located("a document must be a mapping with apiVersion, kind, metadata and spec".into(), index.find(""))
                .hint("start the document with `apiVersion: lifeboat.dev/v1alpha1`"),
        );
        return None;
    };
    let text_field = |key: &str| mapping.get(key).and_then(serde_yaml::Value::as_str);
    let name =
        mapping.get("metadata").and_then(|m| m.get("name")).and_then(serde_yaml::Value::as_str).map(str::to_string);
    let label = match (text_field("kind"), &name) {
        (Some(kind), Some(name)) => format!("{kind}/{name}"),
        (Some(kind), None) => format!("{kind} in {fallback_label}"),
        _ => fallback_label.clone(),
    };
    let secret_keys = report_secrets(&index, file, &label, diags);
    let located = |message: String, position: Option<Position>| {
        let mut d = Diagnostic::error(&file.display, message).at(position);
        d.document = Some(label.clone());
        d
    };
    let api_version = text_field("apiVersion");
    if api_version != Some(API_VERSION) {
        let message = match api_version {
            None => "the document has no apiVersion".to_string(),
            Some(v) => format!("unknown apiVersion `{v}`"),
        };
        diags.push(
            located(message, index.find("apiVersion"))
                .hint(format!("this release of Lifeboat reads `apiVersion: {API_VERSION}`")),
        );
        return None;
    }
    let kind = match text_field("kind") {
        Some(k) => match KINDS.iter().find(|known| **known == k) {
            Some(known) => *known,
            None => {
                let hint = match closest(k, KINDS.iter().copied()) {
                    Some(c) => format!("did you mean `{c}`? The kinds are {}", KINDS.join(", ")),
                    None => format!("the kinds are {}", KINDS.join(", ")),
                };
                diags.push(located(format!("unknown kind `{k}`"), index.find("kind")).hint(hint));
                return None;
            }
        },
        None => {
            diags.push(
                located("the document has no kind".into(), index.find(""))
                    .hint(format!("add `kind:` with one of {}", KINDS.join(", "))),
            );
            return None;
        }
    };
    let mut doc = Document { file, index, kind, name, label, raw: None };
    let typed = match kind {
        "Registry" => yaml::from_segment(segment).map(Raw::Registry),
        "MirrorSet" => yaml::from_segment(segment).map(Raw::MirrorSet),
        "PrePullSet" => yaml::from_segment(segment).map(Raw::PrePullSet),
        _ => yaml::from_segment(segment).map(Raw::BackupPolicy),
    };
    match typed {
        Ok(raw) => doc.raw = Some(raw),
        Err(e) => {
            if !secret_keys.iter().any(|k| e.message.contains(&format!("unknown field `{k}`"))) {
                diags.push(shape_error(&doc, e));
            }
        }
    }
    Some(doc)
}

/// Reports every key that can only hold a secret, and values that are private keys.
fn report_secrets(index: &PositionIndex, file: &SourceFile, label: &str, diags: &mut Diagnostics) -> Vec<String> {
    let mut found = Vec::new();
    for (path, key, position) in index.keys() {
        let normalized: String = key.chars().filter(|c| *c != '_' && *c != '-').collect::<String>().to_lowercase();
        if SECRET_KEYS.contains(&normalized.as_str()) {
            let mut d = Diagnostic::error(&file.display, format!("inline secret: `{key}` must not be written here"))
                .at(Some(position))
                .hint(SECRET_HINT);
            d.document = Some(label.to_string());
            d.path = Some(path.to_string());
            diags.push(d);
            found.push(key.to_string());
        }
    }
    for (path, value, position) in index.scalars() {
        let private = value.contains("PRIVATE KEY-----") || value.trim_start().starts_with("AGE-SECRET-KEY-");
        if private {
            let mut d = Diagnostic::error(&file.display, "inline secret: this value is a private key")
                .at(Some(position))
                .hint("only public keys belong in the desired state; keep private keys in a Secret");
            d.document = Some(label.to_string());
            d.path = Some(path.to_string());
            diags.push(d);
        }
    }
    found
}

/// Turns a serde error into a diagnostic with the field path split out and a hint.
fn shape_error(doc: &Document<'_>, e: yaml::YamlError) -> Diagnostic {
    let (path, message) = match e.message.split_once(": ") {
        Some((p, m)) if !p.contains(' ') => (Some(p.to_string()), m.to_string()),
        _ => (None, e.message.clone()),
    };
    let mut d = Diagnostic::error(&doc.file.display, message.clone()).at(e.position);
    d.document = Some(doc.label.clone());
    d.path = path;
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        d.hint = Some(match closest(field, candidates.iter().copied()) {
            Some(c) => format!("did you mean `{c}`?"),
            None if candidates.is_empty() => "remove this field".into(),
            None => format!("remove this field; the fields here are {}", candidates.join(", ")),
        });
    } else if message.starts_with("invalid type: floating point") || message.starts_with("invalid type: integer") {
        d.hint = Some("quote the value: YAML reads 2.40 as the number 2.4, and tags and versions are text".into());
    } else if message.starts_with("missing field") {
        d.hint = Some("add the field; the schema in schema/lifeboat.schema.json lists every field".into());
    } else if message.starts_with("unknown variant") {
        d.hint = Some("use one of the values listed".into());
    }
    d
}

/// The closest candidate within a small edit distance, for "did you mean" hints.
fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (strsim::damerau_levenshtein(&word.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min()
        .map(|(_, c)| c)
}

/// The names of every classified document, broken or not.
struct Names {
    mirror_sets: BTreeSet<String>,
}

impl Names {
    fn collect(docs: &[Document<'_>]) -> Names {
        Names { mirror_sets: docs.iter().filter(|d| d.kind == "MirrorSet").filter_map(|d| d.name.clone()).collect() }
    }
}

/// Stage two: values and cross-references.
struct Checker<'s> {
    source: &'s dyn Source,
    names: Names,
    diags: Diagnostics,
    state: DesiredState,
    /// First document seen per (kind, name), for duplicate reports.
    first_doc: HashMap<(&'static str, String), String>,
    /// Every fixed mirror reference written so far, with who writes it.
    target_tags: BTreeMap<String, String>,
}

impl Checker<'_> {
    fn check(&mut self, doc: &Document<'_>) {
        // Without a name the typed stage has already reported `missing field name`.
        let Some(name) = &doc.name else {
            return;
        };
        if let Err(message) = check_name(name) {
            self.diags.push(
                doc.diagnostic("metadata.name", message)
                    .hint("use lowercase letters, digits and `-`, such as `vendor-base`"),
            );
        }
        let at = format!("{}:{}", doc.file.display, doc.index.find("metadata.name").map_or(1, |p| p.line));
        if let Some(first) = self.first_doc.get(&(doc.kind, name.clone())) {
            self.diags.push(
                doc.diagnostic(
                    "metadata.name",
                    format!("duplicate {} name `{name}`, first defined at {first}", doc.kind),
                )
                .hint("give each document of a kind its own name"),
            );
            return;
        }
        self.first_doc.insert((doc.kind, name.clone()), at);
        match &doc.raw {
            None => {}
            Some(Raw::Registry(r)) => {
                if let Some(registry) = self.registry(doc, &r.spec) {
                    self.add_registry(doc, name, registry);
                }
            }
            Some(Raw::MirrorSet(m)) => {
                if let Some(set) = self.mirror_set(doc, name, &m.spec) {
                    self.state.mirror_sets.insert(name.clone(), set);
                }
            }
            Some(Raw::PrePullSet(p)) => {
                if let Some(set) = self.pre_pull_set(doc, &p.spec) {
                    self.state.pre_pull_sets.insert(name.clone(), set);
                }
            }
            Some(Raw::BackupPolicy(b)) => {
                if let Some(policy) = self.backup_policy(doc, &b.spec) {
                    self.state.backup_policies.insert(name.clone(), policy);
                }
            }
        }
    }

    /// Checks one field: its value, or a diagnostic at `path` and `None`.
    fn field<T>(&mut self, doc: &Document<'_>, path: &str, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(message) => {
                self.diags.push(doc.diagnostic(path, message));
                None
            }
        }
    }

    /// Errors so far; a conversion returns `None` when it added any.
    fn errors(&self) -> usize {
        self.diags.error_count()
    }

    fn warn(&mut self, doc: &Document<'_>, path: &str, message: impl Into<String>) {
        self.diags.push(doc.diagnostic(path, message).warning());
    }

    /// A path to a file inside the desired-state tree, which must exist.
    fn repo_file(&mut self, doc: &Document<'_>, path: &str, value: &str) -> Option<String> {
        let normalized = value.trim_start_matches("./");
        let problem = if value.starts_with('/') {
            Some(format!("`{value}` is absolute; files named in the desired state are relative to its root"))
        } else if normalized.split('/').any(|c| c == "..") {
            Some(format!("`{value}` leaves the desired-state tree"))
        } else if !self.source.has_file(normalized) {
            Some(format!("`{value}` does not exist in the desired state ({})", self.source.describe()))
        } else {
            None
        };
        match problem {
            Some(message) => {
                self.diags.push(
                    doc.diagnostic(path, message)
                        .hint("commit the file next to the YAML and give its path relative to the desired-state root"),
                );
                None
            }
            None => Some(normalized.to_string()),
        }
    }

    fn registry(&mut self, doc: &Document<'_>, spec: &raw::RegistrySpec) -> Option<Registry> {
        let before = self.errors();
        self.field(doc, "spec.host", image::validate_host(&spec.host));
        let ca_file = spec.ca_file.as_ref().and_then(|f| self.repo_file(doc, "spec.caFile", f));
        if spec.insecure && spec.ca_file.is_some() {
            self.warn(doc, "spec.caFile", "caFile is not used with `insecure: true` (plain HTTP)");
        }
        let credentials = match &spec.credentials {
            None => None,
            Some(raw::Credentials { docker_config: Some(path), helper: None }) => {
                if path.trim_start().starts_with('{') {
                    self.diags.push(
                        doc.diagnostic(
                            "spec.credentials.dockerConfig",
                            "inline secret: this is the content of a config.json, not its path",
                        )
                        .hint(SECRET_HINT),
                    );
                } else if !path.starts_with('/') {
                    self.diags.push(
                        doc.diagnostic("spec.credentials.dockerConfig", format!("`{path}` must be an absolute path"))
                            .hint("name where the file is mounted, such as /var/run/secrets/lifeboat/internal/config.json"),
                    );
                }
                Some(Credentials::DockerConfig(path.clone()))
            }
            Some(raw::Credentials { docker_config: None, helper: Some(helper) }) => {
                let bare = helper.strip_prefix("docker-credential-").unwrap_or(helper);
                if bare.is_empty()
                    || !bare.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
                {
                    self.diags.push(
                        doc.diagnostic(
                            "spec.credentials.helper",
                            format!("`{helper}` is not a credential helper name"),
                        )
                        .hint("give the part after `docker-credential-`, such as `ecr-login`"),
                    );
                }
                Some(Credentials::Helper(bare.to_string()))
            }
            Some(_) => {
                self.diags.push(
                    doc.diagnostic("spec.credentials", "credentials must name exactly one of dockerConfig or helper"),
                );
                None
            }
        };
        let mut limits = Limits::default();
        if let Some(l) = &spec.limits {
            if let Some(rps) = l.requests_per_second {
                if !(rps.is_finite() && rps > 0.0) {
                    self.diags.push(
                        doc.diagnostic("spec.limits.requestsPerSecond", format!("{rps} is not a positive rate"))
                            .hint("give a number above 0, or leave it out for no limit"),
                    );
                }
                limits.requests_per_second = Some(rps);
            }
            if let Some(c) = l.concurrency {
                if c == 0 {
                    self.diags.push(
                        doc.diagnostic("spec.limits.concurrency", "concurrency 0 would never send a request")
                            .hint("give at least 1"),
                    );
                }
                limits.concurrency = c;
            }
        }
        (self.errors() == before).then(|| Registry {
            origin: doc.origin(),
            host: spec.host.clone(),
            insecure: spec.insecure,
            ca_file,
            credentials,
            limits,
        })
    }

    fn add_registry(&mut self, doc: &Document<'_>, name: &str, registry: Registry) {
        let same_host = self.state.registries.iter().find(|(_, r)| r.host == registry.host);
        if let Some((other_name, other)) = same_host {
            let message = format!(
                "host `{}` is already described by Registry/{other_name} ({}:{})",
                registry.host, other.origin.file, other.origin.line
            );
            if other.settings_eq(&registry) {
                self.warn(doc, "spec.host", format!("{message} with the same settings"));
            } else {
                self.diags.push(
                    doc.diagnostic("spec.host", format!("{message} with different settings"))
                        .hint("keep one Registry document per host"),
                );
                return;
            }
        }
        self.state.registries.insert(name.to_string(), registry);
    }

    fn mirror_set(&mut self, doc: &Document<'_>, name: &str, spec: &raw::MirrorSetSpec) -> Option<MirrorSet> {
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
                for tag in image.fixed_tags() {
                    self.claim_target_tag(doc, &path, format!("{repository}:{tag}"), name);
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

    fn schedule(&mut self, doc: &Document<'_>, path: &str, expression: &str) -> Option<Schedule> {
        let result = Schedule::from_str(expression);
        if let Err(message) = &result {
            self.diags.push(doc.diagnostic(path, message.clone()).hint(
                "write five fields, minute hour day-of-month month day-of-week, such as \"0 * * * *\" for hourly",
            ));
        }
        result.ok()
    }

    /// MirrorSet names and explicit mirror references shared by pre-pull sets and backups.
    fn image_selection(
        &mut self,
        doc: &Document<'_>,
        mirror_sets: &[String],
        images: &[String],
    ) -> (BTreeSet<String>, BTreeSet<ImageRef>) {
        for (i, set) in mirror_sets.iter().enumerate() {
            if !self.names.mirror_sets.contains(set) {
                let hint = match closest(set, self.names.mirror_sets.iter().map(String::as_str)) {
                    Some(c) => format!("did you mean `{c}`?"),
                    None if self.names.mirror_sets.is_empty() => {
                        "no MirrorSet is defined; add one or remove this reference".into()
                    }
                    None => format!(
                        "the MirrorSets are {}",
                        self.names.mirror_sets.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                };
                self.diags.push(
                    doc.diagnostic(&format!("spec.mirrorSets[{i}]"), format!("MirrorSet `{set}` does not exist"))
                        .hint(hint),
                );
            }
        }
        let refs: BTreeSet<ImageRef> = images
            .iter()
            .enumerate()
            .filter_map(|(i, r)| self.field(doc, &format!("spec.images[{i}]"), ImageRef::parse(r)))
            .collect();
        if mirror_sets.is_empty() && images.is_empty() {
            self.diags.push(
                doc.diagnostic("spec", "no image is selected")
                    .hint("name MirrorSets in `mirrorSets:` or mirror references in `images:`"),
            );
        }
        (mirror_sets.iter().cloned().collect(), refs)
    }

    fn pre_pull_set(&mut self, doc: &Document<'_>, spec: &raw::PrePullSetSpec) -> Option<PrePullSet> {
        let before = self.errors();
        let (mirror_sets, images) = self.image_selection(doc, &spec.mirror_sets, &spec.images);
        for (key, value) in &spec.node_selector {
            if key.is_empty() || key.len() > 317 || value.len() > 63 {
                self.diags.push(
                    doc.diagnostic(
                        &format!("spec.nodeSelector.{key}"),
                        format!("`{key}: {value}` is not a valid node label"),
                    )
                    .hint("label keys are `prefix/name` with a name of at most 63 characters; values at most 63"),
                );
            }
        }
        for (i, t) in spec.tolerations.iter().enumerate() {
            let path = format!("spec.tolerations[{i}]");
            if t.operator == Some(raw::TolerationOperator::Exists) && t.value.is_some() {
                self.diags.push(
                    doc.diagnostic(&format!("{path}.value"), "a toleration with operator Exists takes no value")
                        .hint("drop `value`, or use `operator: Equal`"),
                );
            }
            if t.toleration_seconds.is_some() && t.effect != Some(raw::TaintEffect::NoExecute) {
                self.diags.push(
                    doc.diagnostic(
                        &format!("{path}.tolerationSeconds"),
                        "tolerationSeconds only applies to effect NoExecute",
                    )
                    .hint("set `effect: NoExecute` or drop tolerationSeconds"),
                );
            }
            if t.key.is_none() && t.operator != Some(raw::TolerationOperator::Exists) {
                self.diags.push(
                    doc.diagnostic(
                        &path,
                        "a toleration without key must use operator Exists (it then tolerates every taint)",
                    )
                    .hint("add `key:` or `operator: Exists`"),
                );
            }
        }
        for (i, secret) in spec.pull_secrets.iter().enumerate() {
            self.field(doc, &format!("spec.pullSecrets[{i}]"), check_subdomain(secret, "Secret"));
        }
        if let Some(pc) = &spec.priority_class_name {
            self.field(doc, "spec.priorityClassName", check_subdomain(pc, "PriorityClass"));
        }
        (self.errors() == before).then(|| PrePullSet {
            origin: doc.origin(),
            node_selector: spec.node_selector.clone(),
            tolerations: spec.tolerations.clone(),
            mirror_sets,
            images,
            pull_secrets: spec.pull_secrets.iter().cloned().collect(),
            priority_class_name: spec.priority_class_name.clone(),
            method: spec.method.unwrap_or(raw::PrePullMethod::Kubelet),
        })
    }

    fn backup_policy(&mut self, doc: &Document<'_>, spec: &raw::BackupPolicySpec) -> Option<BackupPolicy> {
        let before = self.errors();
        let schedule = self.schedule(doc, "spec.schedule", &spec.schedule);
        let (mirror_sets, images) = self.image_selection(doc, &spec.mirror_sets, &spec.images);
        if !spec.destination.starts_with('/') {
            self.diags.push(
                doc.diagnostic("spec.destination", format!("`{}` must be an absolute path", spec.destination))
                    .hint("name the directory archives are written to, such as /var/backups/lifeboat"),
            );
        }
        let mut retention = Retention { keep: None, max_age: None };
        match &spec.retention {
            None => self.warn(doc, "spec", "no retention: archives are never deleted"),
            Some(r) => {
                if r.keep == Some(0) {
                    self.diags.push(
                        doc.diagnostic("spec.retention.keep", "keep 0 would delete every archive")
                            .hint("give at least 1; the newest verified archive is always kept"),
                    );
                }
                retention.keep = r.keep;
                retention.max_age =
                    r.max_age.as_ref().and_then(|a| self.field(doc, "spec.retention.maxAge", Period::from_str(a)));
            }
        }
        let encryption = spec.encryption.as_ref().map(|e| {
            if e.age_recipients.is_empty() {
                self.diags.push(
                    doc.diagnostic("spec.encryption.ageRecipients", "encryption needs at least one recipient")
                        .hint("add an age public key (age1...) or drop `encryption`"),
                );
            }
            for (i, r) in e.age_recipients.iter().enumerate() {
                self.field(doc, &format!("spec.encryption.ageRecipients[{i}]"), check_age_recipient(r));
            }
            Encryption { age_recipients: e.age_recipients.iter().cloned().collect() }
        });
        let max_part_size = spec.max_part_size.as_ref().and_then(|s| {
            let size = self.field(doc, "spec.maxPartSize", Size::from_str(s))?;
            if size.bytes() < 1 << 20 {
                self.diags.push(
                    doc.diagnostic("spec.maxPartSize", format!("`{s}` is smaller than 1MiB"))
                        .hint("parts are meant for removable media: give a size such as 4GiB"),
                );
            }
            Some(size)
        });
        if self.errors() != before {
            return None;
        }
        Some(BackupPolicy {
            origin: doc.origin(),
            schedule: schedule?,
            mirror_sets,
            images,
            destination: spec.destination.clone(),
            retention,
            compression: spec.compression.unwrap_or(raw::Compression::Zstd),
            encryption,
            max_part_size,
        })
    }
}

/// The regex crate's message ends with the reason after its picture of the pattern.
fn regex_problem(pattern: &str, e: &regex::Error) -> String {
    let text = e.to_string();
    let reason = text.rsplit("error: ").next().unwrap_or(&text).trim();
    format!("`{pattern}` is not a valid regular expression: {reason}")
}

/// A DNS-1123 label: what Kubernetes accepts as the name of most objects.
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok { Ok(()) } else { Err(format!("`{name}` is not a valid name")) }
}

/// A DNS-1123 subdomain: the names of Secrets and PriorityClasses.
fn check_subdomain(name: &str, what: &str) -> Result<(), String> {
    let ok = !name.is_empty() && name.len() <= 253 && name.split('.').all(|label| check_name(label).is_ok());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid {what} name: lowercase letters, digits, `-` and `.`, at most 253 characters"
        ))
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

fn check_age_recipient(recipient: &str) -> Result<(), String> {
    let bech32 = recipient
        .strip_prefix("age1")
        .is_some_and(|rest| rest.len() >= 50 && rest.bytes().all(|b| b"qpzry9x8gf2tvdw0s3jn54khce6mua7l".contains(&b)));
    let ssh = recipient.starts_with("ssh-ed25519 ") || recipient.starts_with("ssh-rsa ");
    if bech32 || ssh {
        Ok(())
    } else if recipient.starts_with("AGE-SECRET-KEY-") {
        Err("this is an age identity (a private key), not a recipient".into())
    } else {
        Err(format!(
            "`{recipient}` is not an age recipient: give an age public key (age1...) or an ssh-ed25519/ssh-rsa public key"
        ))
    }
}

#[cfg(test)]
mod tests;
