//! Backup directories built by hand: records, parts and leftovers, scanned, checked and pruned.
//! Times are fixed; the clock is never read.

use std::time::SystemTime;

use super::*;

/// "Now" in every test.
fn now() -> DateTime<Utc> {
    at("2026-11-21T12:00:00Z")
}

fn at(time: &str) -> DateTime<Utc> {
    time.parse().expect("an RFC 3339 time")
}

/// 03:00 UTC on day `day` of November 2026.
fn night(day: u32) -> DateTime<Utc> {
    at(&format!("2026-11-{day:02}T03:00:00Z"))
}

fn sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Dir {
        Dir(tempfile::tempdir().unwrap())
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// Writes a file, with its modification time set when given.
    fn file(&self, name: &str, bytes: &[u8], modified: Option<DateTime<Utc>>) {
        let path = self.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        if let Some(modified) = modified {
            File::options().write(true).open(&path).unwrap().set_modified(SystemTime::from(modified)).unwrap();
        }
    }

    /// Writes an archive of policy `nightly` made at `time` in `parts` files (one file when 1),
    /// and its record.
    fn recorded(&self, time: DateTime<Utc>, parts: usize, result: IntegrityResult, base: Option<&str>) -> Record {
        let archive = archive_name("nightly", time, Compression::Zstd, false);
        let files: Vec<(String, Vec<u8>)> = if parts == 1 {
            vec![(archive.clone(), format!("all of {archive}").into_bytes())]
        } else {
            (1..=parts)
                .map(|n| (format!("{archive}.part-{n:03}"), format!("part {n} of {archive}").into_bytes()))
                .collect()
        };
        for (name, bytes) in &files {
            self.file(name, bytes, None);
        }
        let parts: Vec<Part> = files
            .iter()
            .map(|(name, bytes)| Part { file: name.clone(), size: bytes.len() as u64, sha256: sha256(bytes) })
            .collect();
        let record = Record {
            format: RECORD_FORMAT.to_string(),
            archive,
            policy: "nightly".to_string(),
            created_at: time,
            size: parts.iter().map(|p| p.size).sum(),
            parts,
            compression: Compression::Zstd,
            encrypted: false,
            recipients: Vec::new(),
            images: 3,
            blobs: 9,
            aggregate: sha256(b"checksums"),
            base: base.map(str::to_string),
            integrity: Integrity { result, checked_at: time, how: IntegrityCheck::Content },
            desired_revision: None,
            lifeboat_version: "test".to_string(),
            stored_blobs: Vec::new(),
        };
        record.write(self.path()).unwrap();
        record
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(self.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    }
}

fn archives(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.archive.as_str()).collect()
}

fn deleted(deletions: &[Deletion]) -> Vec<&str> {
    deletions.iter().map(|d| d.archive.as_str()).collect()
}

fn name(day: u32) -> String {
    archive_name("nightly", night(day), Compression::Zstd, false)
}

#[test]
fn archive_names_take_apart_into_policy_time_and_kind() {
    let name = archive_name("vendor-base", night(21), Compression::Zstd, true);
    assert_eq!(name, "vendor-base-20261121T030000Z.tar.zst.age");
    for (file, kind, partial) in [
        (name.clone(), FileKind::Archive, false),
        (format!("{name}.part-001"), FileKind::Part, false),
        (format!("{name}.part-1000.partial"), FileKind::Part, true),
        (format!("{name}.lifeboat.json"), FileKind::Record, false),
        (format!("{name}.lifeboat.json.partial"), FileKind::Record, true),
    ] {
        let parsed = parse_name(&file).unwrap_or_else(|| panic!("{file}"));
        assert_eq!((parsed.archive, parsed.policy, parsed.created_at), (name.as_str(), "vendor-base", night(21)));
        assert_eq!((parsed.kind, parsed.partial), (kind, partial), "{file}");
    }
    assert_eq!(archive_name("p", night(1), Compression::None, false), "p-20261101T030000Z.tar");
    for foreign in [
        "notes.txt",
        "nightly-20261121T030000Z.tar.xz",
        "nightly-20261121T030000Z.tar.part-01",
        "nightly-20261399T030000Z.tar",
        "-20261121T030000Z.tar",
        "nightly-20261121T030000Z.tar.zst.bak",
    ] {
        assert!(parse_name(foreign).is_none(), "{foreign}");
    }
}

#[test]
fn a_record_round_trips_and_its_partial_file_is_gone() {
    let dir = Dir::new();
    let record = dir.recorded(night(21), 2, IntegrityResult::Pass, Some(&name(20)));
    let path = dir.path().join(record.file_name());
    assert_eq!(Record::read(&path).unwrap(), record);
    assert!(!dir.names().iter().any(|n| n.ends_with(PARTIAL_SUFFIX)), "{:?}", dir.names());
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(json["createdAt"], "2026-11-21T03:00:00Z");
    assert_eq!(json["integrity"]["result"], "pass");
    assert_eq!(json["compression"], "zstd");
    assert_eq!(json["base"], name(20).as_str());
    assert!(json.get("desiredRevision").is_none());
}

#[test]
fn a_damaged_record_is_refused_naming_the_file_and_the_fix() {
    let dir = Dir::new();
    let record = dir.recorded(night(21), 1, IntegrityResult::Pass, None);
    let path = dir.path().join(record.file_name());
    let value = serde_json::to_value(&record).unwrap();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{ not json".to_vec(), "not JSON"),
        (
            serde_json::to_vec(&serde_json::json!({"format": "lifeboat-backup-record/v2"})).unwrap(),
            "has format `lifeboat-backup-record/v2`",
        ),
        (
            {
                let mut v = value.clone();
                v["parts"][0]["file"] = "../../etc/passwd".into();
                serde_json::to_vec(&v).unwrap()
            },
            "is not a file of archive",
        ),
        (
            {
                let mut v = value.clone();
                v["size"] = 1.into();
                serde_json::to_vec(&v).unwrap()
            },
            "is not the sum of the parts",
        ),
    ];
    for (bytes, expected) in cases {
        std::fs::write(&path, bytes).unwrap();
        let error = format!("{:#}", Record::read(&path).unwrap_err());
        assert!(error.contains(&path.display().to_string()) && error.contains(expected), "{error}");
    }
}

/// A record was read whole, whatever its size: a (sparse) file of 1 TiB under a record's
/// name is refused after 64 MiB.
#[test]
fn a_huge_record_is_refused_unread_past_the_limit() {
    let dir = Dir::new();
    let path = dir.path().join("nightly-20261121T030000Z.tar.zst.lifeboat.json");
    std::fs::File::create(&path).unwrap().set_len(1 << 40).unwrap();
    let error = format!("{:#}", Record::read(&path).unwrap_err());
    assert!(error.contains("is larger than 64 MiB, which no backup record is"), "{error}");
    let entries = scan(dir.path()).unwrap();
    assert!(matches!(&entries[0].state, State::Unrecorded { unreadable: Some(why) } if why.contains("64 MiB")));
}

#[test]
fn scan_finds_recorded_unrecorded_and_partial_archives_in_time_order() {
    let dir = Dir::new();
    dir.recorded(night(20), 1, IntegrityResult::Pass, None);
    dir.recorded(night(18), 3, IntegrityResult::Fail, None);
    dir.file(&format!("{}.part-001", name(19)), b"no record", None);
    dir.file(&format!("{}.part-001.partial", name(21)), b"being written", None);
    // The same time as night 20, another policy: sorted by name after it.
    dir.file(&archive_name("weekly", night(20), Compression::Gzip, true), b"by hand", None);
    for foreign in ["README.txt", "nightly-latest.tar.zst", "nightly-20261121T030000Z.tar.zst.sha256"] {
        dir.file(foreign, b"not Lifeboat's", None);
    }
    std::fs::create_dir(dir.path().join(name(17))).unwrap();

    let entries = scan(dir.path()).unwrap();
    assert_eq!(
        archives(&entries),
        [
            name(18).as_str(),
            name(19).as_str(),
            name(20).as_str(),
            "weekly-20261120T030000Z.tar.gz.age",
            name(21).as_str()
        ]
    );
    let [failed, unrecorded, passed, weekly, partial] = &entries[..] else { unreachable!() };
    assert!(failed.complete() && !failed.verified());
    assert_eq!(failed.record().unwrap().parts.len(), 3);
    assert_eq!(failed.files.len(), 4, "three parts and the record");
    assert!(passed.verified() && passed.note().is_none());
    assert_eq!(unrecorded.state, State::Unrecorded { unreadable: None });
    assert_eq!(unrecorded.note().as_deref(), Some(NO_RECORD));
    assert_eq!(unrecorded.created_at, night(19), "the time comes from the name");
    assert_eq!((weekly.policy(), weekly.encrypted(), weekly.size()), ("weekly", true, 7));
    assert_eq!(partial.state, State::Incomplete);
    assert!(partial.note().unwrap().starts_with("incomplete: an export was interrupted"));
}

#[test]
fn scan_of_a_missing_directory_names_it() {
    let dir = Dir::new();
    let missing = dir.path().join("nowhere");
    let error = format!("{:#}", scan(&missing).unwrap_err());
    assert!(error.contains("reading backup directory") && error.contains("nowhere"), "{error}");
}

#[test]
fn a_missing_or_resized_part_is_flagged_and_the_archive_is_not_verified() {
    let dir = Dir::new();
    let record = dir.recorded(night(20), 3, IntegrityResult::Pass, None);
    std::fs::remove_file(dir.path().join(&record.parts[1].file)).unwrap();
    dir.file(&record.parts[2].file, b"longer than the recorded part", None);
    let entries = scan(dir.path()).unwrap();
    let State::Recorded { problems, .. } = &entries[0].state else { panic!("{:?}", entries[0].state) };
    assert_eq!(
        problems,
        &[
            format!("part {} is missing", record.parts[1].file),
            format!("part {} is 29 bytes, the record says {}", record.parts[2].file, record.parts[2].size),
        ]
    );
    assert!(!entries[0].complete() && !entries[0].verified());
    assert!(entries[0].note().unwrap().contains("is missing"));
}

#[test]
fn an_unreadable_record_leaves_its_archive_unrecorded_with_the_reason() {
    let dir = Dir::new();
    let record = dir.recorded(night(20), 1, IntegrityResult::Pass, None);
    dir.file(&record.file_name(), b"{", None);
    let entries = scan(dir.path()).unwrap();
    let note = entries[0].note().unwrap();
    assert!(note.starts_with("record unreadable: ") && note.contains(&record.file_name()), "{note}");
    assert!(retention(&entries, Some(0), None, now()).is_empty(), "never deleted");
}

#[test]
fn check_stored_names_the_part_with_a_flipped_byte() {
    let dir = Dir::new();
    let record = dir.recorded(night(20), 3, IntegrityResult::Pass, None);
    assert_eq!(check_stored(dir.path(), &record).unwrap(), Vec::<String>::new());

    let damaged = dir.path().join(&record.parts[1].file);
    let mut bytes = std::fs::read(&damaged).unwrap();
    bytes[3] ^= 0x01;
    std::fs::write(&damaged, bytes).unwrap();
    let problems = check_stored(dir.path(), &record).unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with(&format!("part {} does not match its sha256", record.parts[1].file)));

    std::fs::remove_file(dir.path().join(&record.parts[0].file)).unwrap();
    let problems = check_stored(dir.path(), &record).unwrap();
    assert_eq!(problems[0], format!("part {} is missing", record.parts[0].file));
}

/// Seven nights of passing archives, the 14th to the 20th.
fn week(dir: &Dir) -> Vec<Entry> {
    for day in 14..=20 {
        dir.recorded(night(day), 1, IntegrityResult::Pass, None);
    }
    scan(dir.path()).unwrap()
}

#[test]
fn keep_n_keeps_the_n_newest() {
    let dir = Dir::new();
    let entries = week(&dir);
    let deletions = retention(&entries, Some(3), None, now());
    assert_eq!(deleted(&deletions), [name(14), name(15), name(16), name(17)]);
    assert!(deletions.iter().all(|d| d.reason == "beyond keep 3"), "{deletions:?}");
    assert!(retention(&entries, Some(7), None, now()).is_empty());
    assert!(retention(&entries, None, None, now()).is_empty());
}

#[test]
fn max_age_deletes_older_archives() {
    let dir = Dir::new();
    let entries = week(&dir);
    let deletions = retention(&entries, None, Some(Duration::days(3)), now());
    assert_eq!(deleted(&deletions), [name(14), name(15), name(16), name(17), name(18)], "18th 03:00 < 18th 12:00");
    assert_eq!(deletions[0].reason, "older than 3d");
    let both = retention(&entries, Some(5), Some(Duration::hours(108)), now());
    assert_eq!(deleted(&both), [name(14), name(15), name(16)]);
    assert_eq!(both[0].reason, "beyond keep 5, older than 108h");
    assert_eq!(both[2].reason, "older than 108h");
}

#[test]
fn the_newest_verified_archive_survives_when_every_archive_is_older_than_max_age() {
    let dir = Dir::new();
    let entries = week(&dir);
    let deletions = retention(&entries, None, Some(Duration::days(1)), at("2027-01-01T00:00:00Z"));
    assert_eq!(deleted(&deletions), [name(14), name(15), name(16), name(17), name(18), name(19)]);
    let deletions = retention(&entries, Some(0), None, now());
    assert_eq!(deletions.len(), 6, "keep 0 still keeps the newest verified archive");
}

#[test]
fn the_newest_verified_archive_survives_when_newer_ones_failed() {
    let dir = Dir::new();
    dir.recorded(night(17), 1, IntegrityResult::Pass, None);
    dir.recorded(night(18), 1, IntegrityResult::Pass, None);
    dir.recorded(night(19), 1, IntegrityResult::Fail, None);
    dir.recorded(night(20), 1, IntegrityResult::Fail, None);
    // Passed, but a part is gone: not something a restore can rely on.
    let broken = dir.recorded(night(21), 2, IntegrityResult::Pass, None);
    std::fs::remove_file(dir.path().join(&broken.parts[0].file)).unwrap();
    let entries = scan(dir.path()).unwrap();
    let deletions = retention(&entries, Some(2), None, now());
    assert_eq!(deleted(&deletions), [name(17), name(19)]);
}

#[test]
fn the_base_chain_of_a_kept_incremental_archive_survives() {
    let dir = Dir::new();
    dir.recorded(night(15), 1, IntegrityResult::Pass, None);
    dir.recorded(night(16), 1, IntegrityResult::Pass, None);
    dir.recorded(night(17), 1, IntegrityResult::Pass, Some(&name(16)));
    dir.recorded(night(18), 1, IntegrityResult::Pass, Some(&name(17)));
    dir.recorded(night(19), 1, IntegrityResult::Pass, None);
    dir.recorded(night(20), 1, IntegrityResult::Pass, Some(&name(18)));
    let entries = scan(dir.path()).unwrap();
    let deletions = retention(&entries, Some(1), Some(Duration::days(2)), now());
    assert_eq!(deleted(&deletions), [name(15), name(19)], "20 builds on 18, on 17, on 16");
}

#[test]
fn partial_files_are_deleted_only_after_a_day_without_writes() {
    let dir = Dir::new();
    // Started yesterday morning, still writing an hour ago: a live export.
    let live = archive_name("nightly", at("2026-11-20T06:00:00Z"), Compression::Zstd, false);
    dir.file(&format!("{live}.part-001"), b"done", Some(at("2026-11-20T09:00:00Z")));
    dir.file(&format!("{live}.part-002.partial"), b"writing", Some(at("2026-11-21T11:00:00Z")));
    // Nothing written for two days: interrupted. Its finished part goes too.
    let old = name(18);
    dir.file(&format!("{old}.part-001"), b"done", Some(at("2026-11-18T04:00:00Z")));
    dir.file(&format!("{old}.part-002.partial"), b"cut short", Some(at("2026-11-18T05:00:00Z")));
    // Written and verified, but the record was never renamed into place.
    let unrenamed = name(19);
    dir.file(&unrenamed, b"whole", Some(at("2026-11-19T04:00:00Z")));
    dir.file(&format!("{unrenamed}.lifeboat.json.partial"), b"{", Some(at("2026-11-19T04:00:00Z")));
    // A recorded archive with a stray, stale .partial beside it: only the stray goes.
    let record = dir.recorded(night(20), 1, IntegrityResult::Pass, None);
    dir.file(&format!("{}.partial", record.file_name()), b"{", Some(at("2026-11-20T04:00:00Z")));
    // Finished files without a record stay, however old.
    dir.file(&name(10), b"by hand", Some(night(10)));

    let entries = scan(dir.path()).unwrap();
    let deletions = retention(&entries, Some(7), None, now());
    assert_eq!(deleted(&deletions), [old.as_str(), unrenamed.as_str(), record.archive.as_str()]);
    assert_eq!(deletions[0].files, [format!("{old}.part-001"), format!("{old}.part-002.partial")]);
    assert!(deletions[0].reason.starts_with("an interrupted export"), "{}", deletions[0].reason);
    assert_eq!(deletions[2].files, [format!("{}.partial", record.file_name())]);

    prune(dir.path(), &deletions).unwrap();
    let after = scan(dir.path()).unwrap();
    assert_eq!(archives(&after), [name(10).as_str(), name(20).as_str(), live.as_str()]);
    assert!(after[1].verified());
}

#[test]
fn prune_removes_every_part_then_the_record() {
    let dir = Dir::new();
    dir.recorded(night(19), 3, IntegrityResult::Pass, None);
    dir.recorded(night(20), 1, IntegrityResult::Pass, None);
    let deletions = retention(&scan(dir.path()).unwrap(), Some(1), None, now());
    assert_eq!(deletions[0].files.last(), Some(&format!("{}.lifeboat.json", name(19))), "the record last");
    let removed = prune(dir.path(), &deletions).unwrap();
    let removed: Vec<String> = removed.iter().map(|p| p.file_name().unwrap().to_str().unwrap().to_string()).collect();
    let archive = name(19);
    assert_eq!(
        removed,
        [
            format!("{archive}.part-001"),
            format!("{archive}.part-002"),
            format!("{archive}.part-003"),
            format!("{archive}.lifeboat.json")
        ]
    );
    assert_eq!(dir.names(), [name(20), format!("{}.lifeboat.json", name(20))]);
}

#[test]
fn prune_keeps_the_record_when_a_part_cannot_be_deleted() {
    let dir = Dir::new();
    let record = dir.recorded(night(19), 2, IntegrityResult::Pass, None);
    // A directory in the place of the second part: removing it as a file fails.
    std::fs::remove_file(dir.path().join(&record.parts[1].file)).unwrap();
    std::fs::create_dir(dir.path().join(&record.parts[1].file)).unwrap();
    let deletion = Deletion {
        archive: record.archive.clone(),
        reason: "beyond keep 1".into(),
        // The record first: prune still deletes it last.
        files: vec![record.file_name(), record.parts[0].file.clone(), record.parts[1].file.clone()],
    };
    let error = format!("{:#}", prune(dir.path(), &[deletion]).unwrap_err());
    assert!(error.contains(&record.parts[1].file) && error.contains("its record are kept"), "{error}");
    assert_eq!(dir.names(), [record.file_name(), record.parts[1].file.clone()]);
}

#[test]
fn prune_refuses_a_file_of_another_archive_before_deleting_anything() {
    let dir = Dir::new();
    let old = dir.recorded(night(19), 1, IntegrityResult::Pass, None);
    dir.file("notes.txt", b"mine", None);
    let deletions = [
        Deletion { archive: old.archive.clone(), reason: "beyond keep 1".into(), files: vec![old.archive.clone()] },
        Deletion { archive: old.archive.clone(), reason: "beyond keep 1".into(), files: vec!["notes.txt".into()] },
    ];
    let error = format!("{:#}", prune(dir.path(), &deletions).unwrap_err());
    assert!(error.contains("refusing to delete `notes.txt`"), "{error}");
    assert_eq!(dir.names().len(), 3, "nothing deleted");
}
