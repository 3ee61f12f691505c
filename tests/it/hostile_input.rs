//! Values from the network that once panicked the functions reading them: each now gives a
//! clear error or a safe value.

use std::time::Duration;

use lifeboat::desired::Digest;
use lifeboat::plan::backup_tag;
use lifeboat::prepull::go_duration;

/// A kubelet configuration (read from the API server or a node) with an absurd
/// `imageMinimumGCAge` panicked in `Duration::from_secs_f64`.
#[test]
fn an_absurd_go_duration_is_an_error() {
    for text in ["99999999999999999999h", "5000000000000000h5000000000000000h", &format!("{}s", "9".repeat(400))] {
        let e = go_duration(text).unwrap_err();
        assert!(e.contains("longer than any duration"), "{text}: {e}");
    }
    assert_eq!(go_duration("2562047h"), Ok(Duration::from_secs(2_562_047 * 3600)));
    assert!(go_duration("-1h").is_err());
}

/// A non-ASCII upstream tag over 108 bytes split a character when shortened for its backup
/// tag, and panicked.
#[test]
fn backup_tags_of_non_ascii_tags_are_cut_between_characters() {
    let digest: Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
    for tag in ["é".repeat(60), format!("a{}", "é".repeat(60)), "日本".repeat(30), "v1.2".into()] {
        let backup = backup_tag(&tag, &digest);
        assert!(backup.len() <= 128, "{backup}");
        assert!(backup.ends_with("-backup-abababababab"), "{backup}");
        assert!(tag.starts_with(backup.trim_end_matches("-backup-abababababab")), "{tag} → {backup}");
    }
    assert_eq!(backup_tag("v1.2", &digest), "v1.2-backup-abababababab");
}
