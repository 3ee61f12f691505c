//! Archive files: written plain, encrypted and split, read back byte for byte, and refused with
//! messages that name the archive, the recipient or the identity file.

use std::process::Command;

use age::secrecy::ExposeSecret as _;
use tempfile::TempDir;

use super::*;
use crate::backup::archive::{self, ArchiveWriter};
use crate::desired::Compression;

const MIB: u64 = 1024 * 1024;

/// `len` pseudo-random bytes: incompressible, and the same for the same seed.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    fastrand::Rng::with_seed(seed).fill(&mut bytes);
    bytes
}

/// Writes `bytes` in odd-sized pieces, so that writes straddle the part boundaries.
fn write(path: &Path, recipients: &[String], max_part_size: Option<u64>, bytes: &[u8]) -> Vec<Part> {
    let mut sink = Sink::create(path, recipients, max_part_size).unwrap();
    for piece in bytes.chunks(7919) {
        sink.write_all(piece).unwrap();
    }
    sink.finish().unwrap()
}

fn read(path: &Path, identities: &Identities) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    open(path, identities)?.read_to_end(&mut out)?;
    Ok(out)
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

fn sha256_of(path: &Path) -> String {
    format!("{:x}", Sha256::digest(fs::read(path).unwrap()))
}

/// An age identity file with comments around the key, and its recipient.
fn age_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let identity = age::x25519::Identity::generate();
    let path = dir.join(name);
    let text = format!("# created: today\n# a comment\n\n{}\n", identity.to_string().expose_secret());
    fs::write(&path, text).unwrap();
    (path, identity.to_public().to_string())
}

/// An unencrypted ssh-ed25519 key made by ssh-keygen, and its public key line.
fn ssh_key(dir: &Path, name: &str, passphrase: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-C", "backup@test", "-N", passphrase, "-f"])
        .arg(&path)
        .status()
        .expect("ssh-keygen runs (openssh-client is installed by script/setup)");
    assert!(status.success());
    let public = fs::read_to_string(with_suffix(&path, ".pub")).unwrap();
    (path, public.trim().to_string())
}

fn message(result: anyhow::Result<impl Sized>) -> String {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn a_plain_archive_round_trips_and_its_hash_is_the_file_hash() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("a.tar.zst");
    let bytes = data(300_000, 1);
    let parts = write(&path, &[], None, &bytes);
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0].path, path);
    assert_eq!(parts[0].size, bytes.len() as u64);
    assert_eq!(parts[0].sha256, sha256_of(&path));
    assert_eq!(fs::read(&path).unwrap(), bytes, "stored as given");
    assert_eq!(names(dir.path()), ["a.tar.zst"], "no .partial left");
    assert_eq!(read(&path, &Identities::none()).unwrap(), bytes);
    assert!(!is_encrypted(&path).unwrap());
}

#[test]
fn a_split_archive_is_cut_exactly_at_the_limit_and_joined_back() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("s.tar.zst");
    let bytes = data(10_000_000, 2);
    let parts = write(&path, &[], Some(MIB), &bytes);
    assert_eq!(parts.len(), 10);
    let expected: Vec<String> = (1..=10).map(|n| format!("s.tar.zst.part-{n:03}")).collect();
    assert_eq!(names(dir.path()), expected);
    let mut joined = Vec::new();
    for (index, part) in parts.iter().enumerate() {
        assert_eq!(part.path, dir.path().join(&expected[index]));
        let stored = fs::read(&part.path).unwrap();
        assert_eq!(part.size, stored.len() as u64);
        assert_eq!(part.sha256, sha256_of(&part.path));
        if index < 9 {
            assert_eq!(part.size, MIB, "part {}", index + 1);
        } else {
            assert!(part.size <= MIB);
        }
        joined.extend(stored);
    }
    assert_eq!(joined, bytes);
    assert_eq!(files(&path).unwrap(), parts.iter().map(|p| p.path.clone()).collect::<Vec<_>>());
    assert_eq!(read(&path, &Identities::none()).unwrap(), bytes, "opened by the archive's name");
    assert_eq!(read(&parts[0].path, &Identities::none()).unwrap(), bytes, "opened by its first part");
}

#[test]
fn an_archive_filling_its_last_part_exactly_has_no_empty_part_after_it() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("x");
    let bytes = data(3000, 3);
    let parts = write(&path, &[], Some(1000), &bytes);
    assert_eq!(parts.iter().map(|p| p.size).collect::<Vec<_>>(), [1000, 1000, 1000]);
    assert_eq!(names(dir.path()), ["x.part-001", "x.part-002", "x.part-003"]);
}

#[test]
fn more_than_999_parts_get_wider_numbers_that_still_sort() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("w");
    let bytes = data(1001, 4);
    let parts = write(&path, &[], Some(1), &bytes);
    assert_eq!(parts.len(), 1001);
    assert_eq!(parts[0].path, dir.path().join("w.part-0001"));
    assert_eq!(parts[1000].path, dir.path().join("w.part-1001"));
    let on_disk = names(dir.path());
    assert_eq!(on_disk.len(), 1001, "no .partial left");
    let by_name: Vec<PathBuf> = on_disk.iter().map(|n| dir.path().join(n)).collect();
    assert_eq!(by_name, parts.iter().map(|p| p.path.clone()).collect::<Vec<_>>(), "sorting by name keeps the order");
    assert_eq!(read(&path, &Identities::none()).unwrap(), bytes);
    assert_eq!(read(&parts[0].path, &Identities::none()).unwrap(), bytes);
}

#[test]
fn each_recipient_alone_decrypts_an_archive_for_two() {
    let dir = TempDir::new().unwrap();
    let (age_identity, age_recipient) = age_key(dir.path(), "age.key");
    let (ssh_identity, ssh_recipient) = ssh_key(dir.path(), "id_ed25519", "");
    let path = dir.path().join("e.tar.zst.age");
    let bytes = data(200_000, 5);
    let parts = write(&path, &[age_recipient, ssh_recipient], None, &bytes);
    assert_eq!(parts[0].sha256, sha256_of(&path));
    assert!(is_encrypted(&path).unwrap());
    let stored = fs::read(&path).unwrap();
    assert!(stored.starts_with(b"age-encryption.org/v1\n"), "binary age, not armored");
    assert!(!stored.windows(64).any(|w| w == &bytes[..64]), "the plaintext is not stored");
    for identity in [age_identity, ssh_identity] {
        let identities = Identities::load(std::slice::from_ref(&identity)).unwrap();
        assert_eq!(read(&path, &identities).unwrap(), bytes, "{}", identity.display());
    }
}

#[test]
fn an_unrelated_identity_is_told_the_archive_is_for_other_recipients() {
    let dir = TempDir::new().unwrap();
    let (_, recipient) = age_key(dir.path(), "right.key");
    let (_, ssh_recipient) = ssh_key(dir.path(), "id_right", "");
    let (wrong, _) = age_key(dir.path(), "wrong.key");
    let (wrong_ssh, _) = ssh_key(dir.path(), "id_wrong", "");
    let path = dir.path().join("e.age");
    write(&path, &[recipient, ssh_recipient], None, b"secret");
    let identities = Identities::load(&[wrong.clone(), wrong_ssh.clone()]).unwrap();
    assert_eq!(
        message(open(&path, &identities)),
        format!(
            "none of the identities in {}, {} can decrypt {}: it was encrypted to other recipients",
            wrong.display(),
            wrong_ssh.display(),
            path.display()
        )
    );
}

#[test]
fn an_encrypted_archive_without_identities_asks_for_one() {
    let dir = TempDir::new().unwrap();
    let (_, recipient) = age_key(dir.path(), "k");
    let path = dir.path().join("e.age");
    write(&path, &[recipient], Some(100), b"secret");
    assert!(is_encrypted(&path).unwrap());
    assert_eq!(
        message(open(&path, &Identities::none())),
        format!(
            "{} is encrypted with age: give --identity FILE (an age identity or the SSH private key of one of its \
             recipients)",
            path.display()
        )
    );
}

#[test]
fn an_encrypted_split_archive_round_trips_even_when_the_header_spans_parts() {
    let dir = TempDir::new().unwrap();
    let (identity, recipient) = age_key(dir.path(), "k");
    let (ssh_identity, ssh_recipient) = ssh_key(dir.path(), "id", "");
    let identities = Identities::load(&[identity, ssh_identity]).unwrap();
    let recipients = [recipient, ssh_recipient];

    // Parts smaller than the age header (about 300 bytes for these two recipients), and smaller
    // than the magic bytes that say "encrypted".
    let path = dir.path().join("tiny.age");
    let bytes = data(2000, 6);
    let parts = write(&path, &recipients, Some(7), &bytes);
    assert!(parts.len() > 2000 / 7, "{} parts", parts.len());
    assert!(parts.iter().all(|p| p.size <= 7));
    assert!(is_encrypted(&path).unwrap());
    assert_eq!(read(&path, &identities).unwrap(), bytes);

    let path = dir.path().join("big.age");
    let bytes = data(3_500_000, 7);
    let parts = write(&path, &recipients, Some(MIB), &bytes);
    assert_eq!(parts.len(), 4, "the plaintext plus the age overhead");
    assert!(parts[..3].iter().all(|p| p.size == MIB));
    for part in &parts {
        assert_eq!(part.sha256, sha256_of(&part.path));
    }
    assert_eq!(read(&path, &identities).unwrap(), bytes);
    assert_eq!(read(&parts[0].path, &identities).unwrap(), bytes);
}

#[test]
fn a_flipped_byte_in_an_encrypted_archive_fails_the_read() {
    let dir = TempDir::new().unwrap();
    let (identity, recipient) = age_key(dir.path(), "k");
    let path = dir.path().join("e.age");
    write(&path, &[recipient], None, &data(200_000, 8));
    let mut stored = fs::read(&path).unwrap();
    let middle = stored.len() / 2;
    stored[middle] ^= 0x01;
    fs::write(&path, stored).unwrap();
    assert_eq!(
        message(read(&path, &Identities::load(&[identity]).unwrap())),
        format!("decrypting {}: decryption error (the archive is damaged or cut short)", path.display())
    );
}

#[test]
fn opening_a_missing_archive_names_the_path() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("nope.tar.zst");
    let expected = format!("opening archive {0}: no such file, and no {0}.part-001 either", path.display());
    assert_eq!(message(open(&path, &Identities::none())), expected);
    assert_eq!(message(is_encrypted(&path)), expected);
    let first = dir.path().join("nope.tar.zst.part-001");
    assert_eq!(
        message(open(&first, &Identities::none())),
        format!("opening archive {}: no such file", first.display())
    );
}

#[test]
fn opening_a_later_part_names_the_first_part() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("s");
    let parts = write(&path, &[], Some(10), &data(25, 9));
    assert_eq!(
        message(open(&parts[1].path, &Identities::none())),
        format!(
            "{} is part 2 of an archive: open its first part, {}",
            parts[1].path.display(),
            parts[0].path.display()
        )
    );
}

#[test]
fn a_dropped_sink_leaves_only_partial_files() {
    let dir = TempDir::new().unwrap();
    let (identity, recipient) = age_key(dir.path(), "k");
    let one = dir.path().join("one.tar.zst.age");
    let split = dir.path().join("split.tar.zst.age");
    for (path, max) in [(&one, None), (&split, Some(1000))] {
        let mut sink = Sink::create(path, std::slice::from_ref(&recipient), max).unwrap();
        sink.write_all(&data(300_000, 10)).unwrap();
        drop(sink);
    }
    let left: Vec<String> = names(dir.path()).into_iter().filter(|n| n != "k").collect();
    assert!(left.contains(&"one.tar.zst.age.partial".to_string()), "{left:?}");
    assert!(left.contains(&"split.tar.zst.age.part-001.partial".to_string()), "{left:?}");
    assert!(left.iter().all(|n| n.ends_with(".partial")), "{left:?}");
    assert!(message(open(&one, &Identities::none())).contains("no such file"));
    assert!(message(open(&split, &Identities::none())).contains("no such file"));
    // Even read under its .partial name, the unfinished encryption does not pass for complete.
    let partial = dir.path().join("one.tar.zst.age.partial");
    let error = message(read(&partial, &Identities::load(&[identity]).unwrap()));
    assert!(error.contains("the archive is damaged or cut short"), "{error}");
}

#[test]
fn an_existing_archive_is_never_overwritten() {
    let dir = TempDir::new().unwrap();
    let one = dir.path().join("one");
    let split = dir.path().join("split");
    write(&one, &[], None, b"first");
    write(&split, &[], Some(2), b"first");
    for path in [&one, &split] {
        for max in [None, Some(2)] {
            let error = message(Sink::create(path, &[], max));
            assert!(error.contains("already exists, refusing to overwrite it"), "{error}");
        }
    }
    assert_eq!(read(&one, &Identities::none()).unwrap(), b"first");
    assert_eq!(read(&split, &Identities::none()).unwrap(), b"first");
}

/// The name of an archive another export is still writing is held by its first `.partial`
/// file, whatever either export's layout: the second export is told the name is taken, and
/// the first one's files stay as they are.
#[test]
fn a_name_another_export_is_writing_is_taken() {
    let dir = TempDir::new().unwrap();
    for (first, second) in [(None, None), (Some(1000), Some(1000)), (None, Some(1000)), (Some(1000), None)] {
        let path = dir.path().join(format!("p-{first:?}-{second:?}.tar"));
        let mut writing = Sink::create(&path, &[], first).unwrap();
        writing.write_all(&data(3000, 1)).unwrap();
        let before = names(dir.path());
        let error = Sink::create(&path, &[], second).err().expect("the name is held");
        let taken = error.downcast_ref::<Taken>().expect("a Taken error");
        assert!(!taken.finished, "{taken}");
        assert!(taken.to_string().contains("another export is writing"), "{taken}");
        assert_eq!(names(dir.path()), before, "the second export left nothing behind");
        writing.finish().unwrap();
        assert_eq!(read(&path, &Identities::none()).unwrap(), data(3000, 1));
        // Finished, the archive still holds its name.
        let error = Sink::create(&path, &[], second).err().expect("the name is held");
        assert!(error.downcast_ref::<Taken>().is_some_and(|t| t.finished), "{error:#}");
    }
}

/// An interrupted export's `.partial` files are left alone and keep their name.
#[test]
fn an_interrupted_exports_files_keep_their_name() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("left.tar");
    let mut sink = Sink::create(&path, &[], None).unwrap();
    sink.write_all(b"half an archive").unwrap();
    drop(sink);
    let error = Sink::create(&path, &[], None).err().expect("the name is held");
    assert!(error.downcast_ref::<Taken>().is_some_and(|t| !t.finished), "{error:#}");
    assert_eq!(fs::read(dir.path().join("left.tar.partial")).unwrap(), b"half an archive");
}

#[test]
fn a_zero_part_size_is_refused() {
    let dir = TempDir::new().unwrap();
    let error = message(Sink::create(&dir.path().join("z"), &[], Some(0)));
    assert!(error.contains("the part size must be at least one byte"), "{error}");
    assert!(names(dir.path()).is_empty());
}

#[test]
fn bad_recipients_are_named() {
    let dir = TempDir::new().unwrap();
    let cases = [
        ("age1notavalidkey", "is not a valid age X25519 recipient"),
        ("ssh-ed25519 AAAAnotbase64!", "is not a valid SSH public key"),
        ("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "is not a valid SSH public key"),
        ("AGE-SECRET-KEY-1XYZ", "is neither an age recipient"),
        ("", "is neither an age recipient"),
    ];
    for (recipient, expected) in cases {
        let error = message(Sink::create(&dir.path().join("r"), &[recipient.to_string()], None));
        assert!(error.contains(&format!("recipient `{recipient}`")) && error.contains(expected), "{error}");
    }
    assert!(names(dir.path()).is_empty(), "nothing is created for a bad recipient");
}

#[test]
fn identity_files_that_are_not_identities_are_named_with_what_was_expected() {
    let dir = TempDir::new().unwrap();
    let (_, public) = age_key(dir.path(), "k");
    let public_file = dir.path().join("recipient.txt");
    fs::write(&public_file, format!("{public}\n")).unwrap();
    let comments = dir.path().join("comments.txt");
    fs::write(&comments, "# nothing here\n").unwrap();
    let (locked, _) = ssh_key(dir.path(), "id_locked", "a passphrase");
    let binary = dir.path().join("binary");
    fs::write(&binary, [0xff, 0xfe, 0x00]).unwrap();
    let cases = [
        (&public_file, "contains non-identity data on line 1"),
        (&comments, "holds no identity"),
        (&locked, "is a passphrase-protected SSH key"),
        (&binary, "is not text"),
    ];
    for (file, expected) in cases {
        let error = message(Identities::load(std::slice::from_ref(file)));
        assert!(error.contains(&format!("identity file {}", file.display())), "{error}");
        assert!(error.contains(expected), "{error}");
        if file != &locked {
            assert!(error.contains("expected an age identity file"), "{error}");
        }
    }
    let missing = dir.path().join("missing");
    let error = message(Identities::load(std::slice::from_ref(&missing)));
    assert!(error.contains(&format!("reading identity file {}", missing.display())), "{error}");
}

#[test]
fn an_encrypted_split_archive_written_by_archive_writer_verifies() {
    let dir = TempDir::new().unwrap();
    let (identity, recipient) = age_key(dir.path(), "k");
    let path = dir.path().join("nightly.tar.zst.age");
    let sink = Sink::create(&path, &[recipient], Some(64 * 1024)).unwrap();
    let mut writer = ArchiveWriter::new(sink, Compression::Zstd).unwrap();
    writer.add("oci-layout", 30, &br#"{"imageLayoutVersion":"1.0.0"}"#[..]).unwrap();
    let layer = data(300_000, 11);
    let digest = format!("{:x}", Sha256::digest(&layer));
    writer.add(&format!("blobs/sha256/{digest}"), layer.len() as u64, layer.as_slice()).unwrap();
    let (sink, _aggregate) = writer.finish(&serde_json::json!({"images": []})).unwrap();
    let parts = sink.finish().unwrap();
    assert!(parts.len() >= 5, "{} parts", parts.len());

    let identities = Identities::load(&[identity]).unwrap();
    let verification = archive::verify(open(&path, &identities).unwrap()).unwrap();
    assert!(verification.passed(), "{:?}", verification.problems);
    assert_eq!(verification.files, 3, "oci-layout, the blob and the metadata");
}

#[test]
fn the_sink_and_the_opened_stream_can_move_to_the_blocking_pool() {
    fn send<T: Send>() {}
    send::<Sink>();
    send::<Identities>();
    send::<Box<dyn BufRead + Send>>();
}
