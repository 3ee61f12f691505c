//! BackupPolicy documents: schedule, images, destination, retention, compression, encryption
//! and part size.

use std::str::FromStr;

use super::{Checker, Document};
use crate::desired::raw;
use crate::desired::{BackupPolicy, Encryption, Period, Retention, Size};

impl Checker<'_> {
    pub(super) fn backup_policy(&mut self, doc: &Document<'_>, spec: &raw::BackupPolicySpec) -> Option<BackupPolicy> {
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
                if r.keep.is_none() && r.max_age.is_none() {
                    self.warn(
                        doc,
                        "spec.retention",
                        "retention sets neither keep nor maxAge: archives are never deleted",
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

fn check_age_recipient(recipient: &str) -> Result<(), String> {
    // Native recipients are `age1` + bech32 data; plugin recipients (`age1yubikey1...`) put the
    // plugin name before the last `1`.
    let bech32 = recipient.strip_prefix("age1").is_some_and(|rest| {
        let data = rest.rsplit_once('1').map_or(rest, |(_, d)| d);
        rest.len() >= 50
            && rest.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && data.bytes().all(|b| b"qpzry9x8gf2tvdw0s3jn54khce6mua7l".contains(&b))
    });
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
