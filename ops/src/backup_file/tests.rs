//! The backup file format: round trips with a passphrase and with a recipient, wrong keys,
//! truncation and flipped bytes anywhere, and the streaming check of a server's body.

use std::io::Cursor;

use api::snapshot_stream::{StreamReader, StreamWriter};

use super::*;

fn records(n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..n)
        .map(|i| {
            (
                format!("m/general/{i:08}").into_bytes(),
                // Large enough that the state spans several of age's 64 KiB chunks.
                vec![(i % 251) as u8; 300 + i % 700],
            )
        })
        .collect()
}

/// Blobs of a backup: several large enough to span age's chunks, one empty.
fn blobs() -> Vec<Vec<u8>> {
    vec![
        vec![7u8; 150_000],
        b"hello".to_vec(),
        Vec::new(),
        (0..90_000u32).map(|i| (i % 253) as u8).collect(),
    ]
}

/// A blob section of `blobs` (ascending by sha256, as a server writes it) and its digest.
fn blob_section(blobs: &[Vec<u8>]) -> (Vec<u8>, BlobsDigest) {
    let mut sorted: Vec<([u8; 32], &Vec<u8>)> = blobs
        .iter()
        .map(|b| (Sha256::digest(b).into(), b))
        .collect();
    sorted.sort();
    let mut out = Vec::new();
    let mut digest = BlobsDigest::default();
    for (sha, b) in sorted {
        out.extend_from_slice(&api::backup::encode_blob_header(&sha, b.len() as u64));
        out.extend_from_slice(b);
        digest.count += 1;
        digest.bytes += b.len() as u64;
    }
    out.extend_from_slice(&api::backup::encode_blob_end(digest));
    (out, digest)
}

/// A server body (frames + state stream + blob section of [`blobs`]) holding `pairs`, and
/// its manifest.
fn body(pairs: &[(Vec<u8>, Vec<u8>)]) -> (Vec<u8>, Manifest) {
    body_with(pairs, |_| {})
}

/// [`body`], with the manifest changed by `tweak` before it is framed.
fn body_with(
    pairs: &[(Vec<u8>, Vec<u8>)],
    tweak: impl FnOnce(&mut Manifest),
) -> (Vec<u8>, Manifest) {
    body_of(pairs, &blobs(), tweak)
}

/// A body of `pairs` and `blobs`; a format 1 body (no blob section) if the tweak sets it.
fn body_of(
    pairs: &[(Vec<u8>, Vec<u8>)],
    blobs: &[Vec<u8>],
    tweak: impl FnOnce(&mut Manifest),
) -> (Vec<u8>, Manifest) {
    let mut w = StreamWriter::new(Vec::new(), b"meta").unwrap();
    for (k, v) in pairs {
        w.push(k, v).unwrap();
    }
    let (stream, summary) = w.finish().unwrap();
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        created_at_ms: 1_700_000_000_000,
        workspace: "chat.corp.lan".into(),
        index: 77,
        term: 2,
        root_fingerprint: "AB:CD".into(),
        served_by: 1,
        conclave_version: "test".into(),
        includes_sessions: false,
        state: StateDigest {
            bytes: stream.len() as u64,
            records: summary.records,
            sha256: hex::encode(summary.sha256),
        },
        blobs: BlobsDigest::default(),
    };
    let (section, digest) = blob_section(blobs);
    let mut manifest = manifest;
    manifest.blobs = digest;
    tweak(&mut manifest);
    let secrets = Secrets {
        kek: Some("conclave-kek-v1 0000".into()),
    };
    let mut out = api::backup::encode_frames(&manifest, &secrets).unwrap();
    out.extend_from_slice(&stream);
    if api::backup::has_blob_section(manifest.format) {
        out.extend_from_slice(&section);
    }
    (out, manifest)
}

fn encrypt(body: &[u8], key: &BackupKey) -> Vec<u8> {
    // A low scrypt work factor: the real one costs about a second per test (debug build).
    let mut w = BackupWriter::with_scrypt_work_factor(Vec::new(), key, Some(10)).unwrap();
    w.write_all(body).unwrap();
    w.finish().unwrap()
}

struct Recipient {
    _dir: tempfile::TempDir,
    identity: BackupKey,
    recipient: BackupKey,
}

fn recipient() -> Recipient {
    let dir = tempfile::tempdir().unwrap();
    let (secret, public) = generate_identity();
    let path = dir.path().join("identity.txt");
    std::fs::write(&path, format!("# test\n{secret}\n")).unwrap();
    Recipient {
        _dir: dir,
        identity: BackupKey::Identity(path),
        recipient: BackupKey::Recipients(vec![public]),
    }
}

/// The records of a backup's state, checking that its blobs are [`blobs`].
fn read_all_records(
    mut state: Box<dyn std::io::Read>,
    manifest: &Manifest,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut reader = StreamReader::new(&mut state).unwrap();
    assert_eq!(reader.meta(), b"meta");
    let mut out = Vec::new();
    while let Some(pair) = reader.next_record().unwrap() {
        out.push(pair);
    }
    let mut got = Vec::new();
    read_blobs(&mut state, manifest, |sha, b| {
        assert_eq!(sha, hex::encode(Sha256::digest(b)));
        got.push(b.to_vec());
        Ok(())
    })
    .unwrap();
    let mut want = blobs();
    want.sort_by_key(|b| Sha256::digest(b));
    if api::backup::has_blob_section(manifest.format) {
        assert_eq!(got, want, "every blob, ascending by sha256");
    } else {
        assert!(got.is_empty());
    }
    out
}

#[test]
fn round_trip_with_a_passphrase() {
    let pairs = records(400);
    let (body, manifest) = body(&pairs);
    let key = BackupKey::Passphrase("correct horse battery staple".into());
    let file = encrypt(&body, &key);
    assert!(
        !file.windows(9).any(|w| w == b"m/general"),
        "plaintext leaked"
    );

    assert_eq!(verify(Cursor::new(file.clone()), &key).unwrap(), manifest);
    let opened = open(Cursor::new(file.clone()), &key).unwrap();
    assert_eq!(opened.manifest, manifest);
    assert_eq!(opened.secrets.kek.as_deref(), Some("conclave-kek-v1 0000"));
    assert_eq!(read_all_records(opened.state, &manifest), pairs);

    let wrong = BackupKey::Passphrase("correct horse battery stapler".into());
    assert!(matches!(
        verify(Cursor::new(file.clone()), &wrong),
        Err(BackupError::WrongKey(_))
    ));
    // A passphrase file given an identity, and the other way round: a clear key error.
    let other = recipient();
    assert!(matches!(
        verify(Cursor::new(file), &other.identity),
        Err(BackupError::Key(_))
    ));
}

#[test]
fn round_trip_with_a_recipient() {
    let pairs = records(300);
    let (body, manifest) = body(&pairs);
    let r = recipient();
    let file = encrypt(&body, &r.recipient);
    assert_eq!(
        verify(Cursor::new(file.clone()), &r.identity).unwrap(),
        manifest
    );
    let opened = open(Cursor::new(file.clone()), &r.identity).unwrap();
    assert_eq!(read_all_records(opened.state, &manifest), pairs);

    let stranger = recipient();
    assert!(matches!(
        verify(Cursor::new(file.clone()), &stranger.identity),
        Err(BackupError::WrongKey(_))
    ));
    assert!(matches!(
        verify(
            Cursor::new(file),
            &BackupKey::Passphrase("a passphrase of some length".into())
        ),
        Err(BackupError::Key(_))
    ));
}

#[test]
fn short_and_empty_passphrases_and_bad_recipients_are_refused() {
    for p in ["", "short", "elevenchars"] {
        let err = BackupWriter::new(Vec::new(), &BackupKey::Passphrase(p.into()))
            .err()
            .unwrap();
        assert!(
            matches!(&err, BackupError::Key(m) if m.contains("at least 12")),
            "{err}"
        );
    }
    let err = BackupWriter::new(Vec::new(), &BackupKey::Recipients(vec!["age1nope".into()]))
        .err()
        .unwrap();
    assert!(matches!(err, BackupError::Key(_)), "{err}");
    assert!(BackupWriter::new(Vec::new(), &BackupKey::Recipients(vec![])).is_err());
}

#[test]
fn truncation_anywhere_is_detected() {
    let (body, _) = body(&records(300));
    let r = recipient();
    let file = encrypt(&body, &r.recipient);
    for cut in [
        0,
        10,
        100,
        200,
        file.len() / 2,
        65_536 + 200,
        file.len() - 1,
    ] {
        let cut = cut.min(file.len() - 1);
        let err = verify(Cursor::new(file[..cut].to_vec()), &r.identity);
        assert!(
            err.is_err(),
            "a file cut at {cut} of {} verified",
            file.len()
        );
    }
}

#[test]
fn a_flipped_byte_anywhere_is_detected() {
    let (body, _) = body(&records(300));
    let r = recipient();
    let file = encrypt(&body, &r.recipient);
    // Seeded positions: the age header, the first chunk, the middle, the last bytes.
    let mut positions = vec![5, 60, 150, file.len() / 2, file.len() - 20, file.len() - 1];
    let mut seed: u64 = 0x5eed;
    for _ in 0..8 {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        positions.push((seed >> 33) as usize % file.len());
    }
    for at in positions {
        let mut damaged = file.clone();
        damaged[at] ^= 0x01;
        let err = verify(Cursor::new(damaged), &r.identity).err();
        let err = err.unwrap_or_else(|| panic!("flipped byte at {at} verified"));
        assert!(!err.to_string().contains('\n'), "{err}");
    }
}

#[test]
fn a_manifest_that_does_not_match_the_state_fails_verify() {
    let tweaks: [fn(&mut Manifest); 5] = [
        |m| m.state.records += 1,
        |m| m.state.bytes -= 1,
        |m| m.state.sha256 = "11".repeat(32),
        |m| m.blobs.count -= 1,
        |m| m.blobs.bytes += 1,
    ];
    let r = recipient();
    for tweak in tweaks {
        let (forged, _) = body_with(&records(10), tweak);
        let err = verify(Cursor::new(encrypt(&forged, &r.recipient)), &r.identity).unwrap_err();
        assert!(matches!(err, BackupError::Damaged(_)), "{err}");
        // A wrong state length puts the blob section elsewhere: refused while it streams.
        let mut check = BodyCheck::new();
        let checked = check.push(&forged).and_then(|()| check.finish());
        assert!(
            matches!(checked, Err(BackupError::Damaged(_))),
            "{checked:?}"
        );
    }
}

#[test]
fn body_check_follows_a_body_in_any_chunking() {
    let (body, manifest) = body(&records(200));
    for chunk in [1, 7, 41, 1000, 65_536, body.len()] {
        let mut check = BodyCheck::new();
        for piece in body.chunks(chunk) {
            check.push(piece).unwrap();
        }
        assert_eq!(check.manifest(), Some(&manifest));
        assert_eq!(check.finish().unwrap(), manifest, "chunk {chunk}");
    }
    // A body cut short (in the frames, the state, the blob section), or changed in its
    // state, is refused.
    let section = blob_section(&blobs()).0.len();
    let state_end = body.len() - section;
    for cut in [
        3,
        100,
        state_end - 1,
        state_end,
        state_end + 50,
        body.len() - 1,
    ] {
        let mut check = BodyCheck::new();
        check.push(&body[..cut]).unwrap();
        assert!(check.finish().is_err(), "cut at {cut}");
    }
    let mut changed = body.clone();
    changed[state_end - 100] ^= 0x80;
    let mut check = BodyCheck::new();
    check.push(&changed).unwrap();
    assert!(matches!(check.finish(), Err(BackupError::Damaged(_))));
}

#[test]
fn a_file_that_is_not_a_backup_is_refused() {
    let r = recipient();
    let file = encrypt(b"hello", &r.recipient);
    // BackupWriter wrote MAGIC, then "hello": the frames are incomplete.
    assert!(verify(Cursor::new(file), &r.identity).is_err());
    assert!(verify(Cursor::new(b"plain text".to_vec()), &r.identity).is_err());
    let mut plain = Vec::new();
    let enc = age::Encryptor::with_recipients(std::iter::once(
        &age::x25519::Recipient::from_str(match &r.recipient {
            BackupKey::Recipients(k) => &k[0],
            _ => unreachable!(),
        })
        .unwrap() as &dyn age::Recipient,
    ))
    .unwrap();
    let mut w = enc.wrap_output(&mut plain).unwrap();
    w.write_all(b"NOT-A-CONCLAVE-BACKUP-AT-ALL").unwrap();
    w.finish().unwrap();
    let err = verify(Cursor::new(plain), &r.identity).unwrap_err();
    assert!(matches!(err, BackupError::NotABackup(_)), "{err}");
}

/// The byte offset of blob `which`'s content (in the ascending order) within `body`.
fn blob_offset(body: &[u8], manifest: &Manifest, which: &[u8]) -> usize {
    let sha: [u8; 32] = Sha256::digest(which).into();
    let header = api::backup::encode_blob_header(&sha, which.len() as u64);
    let from = body.len() - manifest.blobs.bytes as usize;
    let at = body[from - 2000..]
        .windows(header.len())
        .position(|w| w == header)
        .unwrap();
    from - 2000 + at + header.len()
}

#[test]
fn a_damaged_blob_fails_verify_and_the_body_check() {
    let (body, manifest) = body(&records(20));
    let r = recipient();
    assert_eq!(
        verify(Cursor::new(encrypt(&body, &r.recipient)), &r.identity).unwrap(),
        manifest
    );
    // One byte of a blob's content changed before encryption (age then authenticates the
    // damage): the blob's sha256 no longer matches its header, and it is named.
    let hello = b"hello".as_slice();
    let mut damaged = body.clone();
    damaged[blob_offset(&body, &manifest, hello) + 1] ^= 0x20;
    let err = verify(Cursor::new(encrypt(&damaged, &r.recipient)), &r.identity).unwrap_err();
    let name = hex::encode(Sha256::digest(hello));
    assert!(
        matches!(&err, BackupError::Damaged(m) if m.contains(&name)),
        "{err}"
    );
    assert!(!err.to_string().contains('\n'), "{err}");
    let mut check = BodyCheck::new();
    assert!(matches!(check.push(&damaged), Err(BackupError::Damaged(_))));

    // A blob missing from the section (its end record and the manifest agree on the rest).
    let mut fewer = blobs();
    fewer.remove(1);
    let (short, _) = body_of(&records(20), &fewer, |m| m.blobs = manifest.blobs);
    let err = verify(Cursor::new(encrypt(&short, &r.recipient)), &r.identity).unwrap_err();
    assert!(matches!(err, BackupError::Damaged(_)), "{err}");
    let mut check = BodyCheck::new();
    check.push(&short).unwrap();
    assert!(matches!(check.finish(), Err(BackupError::Damaged(_))));
}

#[test]
fn a_format_1_backup_still_reads() {
    let pairs = records(50);
    let (body, manifest) = body_of(&pairs, &[], |m| {
        m.format = 1;
        m.blobs = BlobsDigest::default();
    });
    let r = recipient();
    let file = encrypt(&body, &r.recipient);
    assert_eq!(
        verify(Cursor::new(file.clone()), &r.identity).unwrap(),
        manifest
    );
    let opened = open(Cursor::new(file), &r.identity).unwrap();
    assert_eq!(read_all_records(opened.state, &manifest), pairs);
    let mut check = BodyCheck::new();
    check.push(&body).unwrap();
    assert_eq!(check.finish().unwrap(), manifest);
    // A format 1 body with bytes after its state stream is refused.
    let mut longer = body.clone();
    longer.push(0);
    let mut check = BodyCheck::new();
    assert!(check.push(&longer).is_err());
}
