//! The archive format: written, read back, and refused when damaged or unsafe.

use super::*;

fn blob(data: &[u8]) -> (String, &[u8]) {
    (format!("blobs/sha256/{:x}", Sha256::digest(data)), data)
}

/// A small OCI layout: oci-layout, index.json and two blobs.
fn write(compression: Compression) -> (Vec<u8>, String) {
    let mut w = ArchiveWriter::new(Vec::new(), compression).unwrap();
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    w.add("oci-layout", layout.len() as u64, &layout[..]).unwrap();
    let index = br#"{"schemaVersion":2,"manifests":[]}"#;
    w.add("index.json", index.len() as u64, &index[..]).unwrap();
    for data in [&b"first layer"[..], &b"second layer, a little longer"[..]] {
        let (path, bytes) = blob(data);
        let hex = w.add(&path, bytes.len() as u64, bytes).unwrap();
        assert!(path.ends_with(&hex));
    }
    w.finish(&serde_json::json!({"images": [], "lifeboatVersion": "test"})).unwrap()
}

#[test]
fn every_compression_round_trips_and_verifies() {
    for compression in [Compression::Zstd, Compression::Gzip, Compression::None] {
        let (bytes, aggregate) = write(compression);
        let v = verify(bytes.as_slice()).unwrap();
        assert!(v.passed(), "{compression:?}: {:?}", v.problems);
        assert_eq!(v.files, 5, "four files and the metadata");
        assert_eq!(aggregate.len(), 64);
    }
}

#[test]
fn the_archive_is_readable_with_tar_and_sha256sum_alone() {
    let (bytes, aggregate) = write(Compression::None);
    let mut archive = tar::Archive::new(bytes.as_slice());
    let mut files = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut text = Vec::new();
        entry.read_to_end(&mut text).unwrap();
        files.insert(entry.path().unwrap().display().to_string(), text);
    }
    let checksums = String::from_utf8(files[CHECKSUMS].clone()).unwrap();
    for line in checksums.lines() {
        let (hex, path) = line.split_once("  ").unwrap();
        assert_eq!(format!("{:x}", Sha256::digest(&files[path])), hex, "{path}");
    }
    assert_eq!(String::from_utf8(files[AGGREGATE].clone()).unwrap(), format!("{aggregate}  {CHECKSUMS}\n"));
}

/// Flips one byte of `needle` inside an uncompressed archive.
fn flip(bytes: &mut [u8], needle: &[u8]) {
    let at = bytes.windows(needle.len()).position(|w| w == needle).expect("the content is in the archive");
    bytes[at] ^= 0x01;
}

#[test]
fn a_flipped_byte_names_the_blob_or_file() {
    let (mut bytes, _) = write(Compression::None);
    flip(&mut bytes, b"second layer");
    let v = verify(bytes.as_slice()).unwrap();
    assert!(!v.passed());
    let (path, _) = blob(b"second layer, a little longer");
    assert!(
        v.problems.iter().any(|p| p.contains(&path) && p.contains("does not hash to its name")),
        "{:?}",
        v.problems
    );
    assert!(
        v.problems.iter().any(|p| p.contains(&path) && p.contains("does not match its checksum")),
        "{:?}",
        v.problems
    );

    let (mut bytes, _) = write(Compression::None);
    flip(&mut bytes, b"lifeboatVersion");
    let v = verify(bytes.as_slice()).unwrap();
    assert_eq!(v.problems, [format!("{METADATA} does not match its checksum")]);

    let (mut bytes, _) = write(Compression::None);
    flip(&mut bytes, b"  index.json");
    let v = verify(bytes.as_slice()).unwrap();
    assert!(v.problems.iter().any(|p| p.contains(AGGREGATE)), "{:?}", v.problems);
}

#[test]
fn a_damaged_compressed_archive_fails() {
    for compression in [Compression::Zstd, Compression::Gzip] {
        let (mut bytes, _) = write(compression);
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        let failed = match verify(bytes.as_slice()) {
            Ok(v) => !v.passed(),
            Err(_) => true,
        };
        assert!(failed, "{compression:?}");
    }
}

/// A tar with one entry written by hand, so its name and type can be anything.
fn crafted(name: &[u8], kind: tar::EntryType, link: Option<&[u8]>) -> Vec<u8> {
    let mut header = tar::Header::new_old();
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    if let Some(link) = link {
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    }
    header.set_entry_type(kind);
    header.set_size(if kind == tar::EntryType::Regular { 4 } else { 0 });
    header.set_mode(0o644);
    header.set_cksum();
    let mut out = Vec::new();
    {
        let mut builder = tar::Builder::new(&mut out);
        let data: &[u8] = if kind == tar::EntryType::Regular { b"evil" } else { b"" };
        builder.append(&header, data).unwrap();
        builder.finish().unwrap();
    }
    out
}

#[test]
fn traversal_absolute_links_and_devices_are_refused() {
    type Case<'a> = (&'a [u8], tar::EntryType, Option<&'a [u8]>);
    let cases: [Case<'_>; 6] = [
        (b"../escape", tar::EntryType::Regular, None),
        (b"blobs/../../escape", tar::EntryType::Regular, None),
        (b"/etc/passwd", tar::EntryType::Regular, None),
        (b"index.json", tar::EntryType::Symlink, Some(b"/etc/passwd")),
        (b"index.json", tar::EntryType::Link, Some(b"oci-layout")),
        (b"dev", tar::EntryType::Char, None),
    ];
    for (name, kind, link) in cases {
        let err = verify(crafted(name, kind, link).as_slice()).unwrap_err();
        assert!(format!("{err:#}").contains("refusing the archive"), "{}: {err:#}", String::from_utf8_lossy(name));
    }
}

#[test]
fn a_source_of_the_wrong_length_fails_the_archive() {
    let mut w = ArchiveWriter::new(Vec::new(), Compression::None).unwrap();
    assert!(w.add("short", 10, &b"abc"[..]).is_err());
    let mut w = ArchiveWriter::new(Vec::new(), Compression::None).unwrap();
    assert!(w.add("long", 2, &b"abc"[..]).is_err());
    let mut w = ArchiveWriter::new(Vec::new(), Compression::None).unwrap();
    assert!(w.add("../x", 1, &b"a"[..]).is_err());
}
