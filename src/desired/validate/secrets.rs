//! Secrets written inline: keys that can only hold one (`password`, `token`, ...) and values
//! that are private keys, each reported where it is written; and the pattern that keeps a
//! private key out of every other message. Lifeboat never accepts a secret in the desired state.

use crate::desired::diagnostic::{Diagnostic, Diagnostics};
use crate::desired::source::SourceFile;
use crate::desired::yaml::PositionIndex;

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

/// Maps whose keys are chosen by people rather than by the format.
const FREE_FORM_MAPS: [&str; 4] =
    ["metadata.labels", "metadata.annotations", "spec.nodeSelector", "spec.signatures.annotations"];

pub(super) const SECRET_HINT: &str = "the desired state lives in Git and must never hold secrets: put credentials in a \
     Docker config.json (for example a mounted kubernetes.io/dockerconfigjson Secret) and name its path \
     in a Registry's spec.credentials.dockerConfig";

/// A private key as a message may quote it: PEM (whole, or up to the quote ending the value, its
/// line breaks possibly escaped), or an age identity.
pub(super) fn private_keys() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        regex::Regex::new(
            r#"(?s)-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?:.*?-----END [A-Z0-9 ]*PRIVATE KEY-----|[^"`]*)|AGE-SECRET-KEY-[0-9A-Za-z]*"#,
        )
        .expect("a valid pattern")
    })
}

/// Reports every key that can only hold a secret, and values that are private keys.
pub(super) fn report_secrets(
    index: &PositionIndex,
    file: &SourceFile,
    label: &str,
    diags: &mut Diagnostics,
) -> Vec<String> {
    let mut found = Vec::new();
    for key in index.keys() {
        // Keys of free-form maps are names chosen by people (labels, selectors), not fields.
        if FREE_FORM_MAPS.iter().any(|map| key.parent_is(map)) {
            continue;
        }
        // The longest secret key is 15 letters; longer keys are not worth normalizing.
        if key.text.len() > 64 {
            continue;
        }
        let normalized: String = key.text.chars().filter(|c| *c != '_' && *c != '-').collect::<String>().to_lowercase();
        if SECRET_KEYS.contains(&normalized.as_str()) {
            let mut d =
                Diagnostic::error(&file.display, format!("inline secret: `{}` must not be written here", key.text))
                    .at(Some(key.position))
                    .hint(SECRET_HINT);
            d.document = Some(label.to_string());
            d.path = Some(key.path());
            diags.push(d);
            found.push(key.text.to_string());
        }
    }
    for scalar in index.scalars() {
        let value = scalar.text;
        let private = value.contains("PRIVATE KEY-----") || value.trim_start().starts_with("AGE-SECRET-KEY-");
        if private {
            let mut d = Diagnostic::error(&file.display, "inline secret: this value is a private key")
                .at(Some(scalar.position))
                .hint("only public keys belong in the desired state; keep private keys in a Secret");
            d.document = Some(label.to_string());
            d.path = Some(scalar.path());
            diags.push(d);
        }
    }
    found
}
