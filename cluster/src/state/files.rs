//! Apply rules of file attachments (command version 7): posting a message with files, and what
//! deleting such a message does to its files.
//!
//! Owns the file records (`f/`), the message-to-files index (`mf/`), the live references of
//! every blob (`br/`) and when a blob lost its last one (`bz/`): the replicated facts from which
//! every node's garbage collector reaches the same verdict about which blobs may go, and the
//! added-files index (`fi/`) the background fetcher follows. Must never touch blob bytes or the
//! disk (blobs live outside the state machine), read the clock or use randomness: the file ids
//! come in the command.

use crate::command::{Applied, ApplyError, FileRecord, NewFile, Outcome};
use crate::state::StateError;
use crate::state::blobs_valid;
use crate::state::chat::messages;
use crate::state::context::Ctx;
use crate::state::keys;

/// Most files one message may carry.
pub const MAX_FILES_PER_MESSAGE: usize = 16;

/// Whether `id` has the form of a file id (32 lower-case hex characters).
pub fn is_file_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn check_files(cx: &Ctx<'_, '_>, files: &[NewFile]) -> Result<Result<(), ApplyError>, StateError> {
    if files.is_empty() || files.len() > MAX_FILES_PER_MESSAGE {
        return Ok(Err(ApplyError::Invalid(format!(
            "a message carries 1 to {MAX_FILES_PER_MESSAGE} files"
        ))));
    }
    for (i, f) in files.iter().enumerate() {
        if !is_file_id(&f.id) || files[..i].iter().any(|g| g.id == f.id) {
            return Ok(Err(ApplyError::Invalid(format!("bad file id '{}'", f.id))));
        }
        if cx.kv.exists(&keys::file(&f.id))? {
            return Ok(Err(ApplyError::Conflict(format!(
                "file {} already exists",
                f.id
            ))));
        }
        if !blobs_valid(f) {
            return Ok(Err(ApplyError::Invalid(format!(
                "file {} names a blob that is not a SHA-256",
                f.id
            ))));
        }
    }
    Ok(Ok(()))
}

/// The blobs a state record references if it is a live (not tombstoned) file record
/// (`f/<id>` -> [`FileRecord`]); empty for any other record. For readers of a state stream
/// (a backup collects the blobs its snapshot needs from the snapshot itself).
pub fn live_blobs_of_record(key: &[u8], value: &[u8]) -> Result<Vec<String>, StateError> {
    if !key.starts_with(keys::FILE_PREFIX) {
        return Ok(Vec::new());
    }
    let rec: FileRecord = bincode::deserialize(value).map_err(|source| StateError::Decode {
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })?;
    if rec.deleted_ms.is_some() {
        return Ok(Vec::new());
    }
    Ok(rec.file.blobs().into_iter().map(str::to_owned).collect())
}

/// Posts a message carrying `files`: the message as `PostMessageV2` would, then the file
/// records and their blob references. A duplicate post (same author and `client_msg_id`)
/// returns the original and writes nothing; a refused post writes nothing either.
#[allow(clippy::too_many_arguments)]
pub fn post_with_files(
    cx: &mut Ctx<'_, '_>,
    channel: &str,
    author: &str,
    body: &str,
    client_msg_id: &str,
    thread_root: Option<u64>,
    files: &[NewFile],
) -> Result<Outcome, StateError> {
    if let Err(e) = check_files(cx, files)? {
        // A retry of a post that went through must still find the original, whatever the
        // new attempt's files look like.
        if let Some((ch, seq)) = cx
            .kv
            .get::<(String, u64)>(&keys::dedup(author, client_msg_id))?
        {
            return Ok(Ok(Applied::MessageChanged {
                channel: ch,
                seq,
                duplicate: true,
            }));
        }
        return Ok(Err(e));
    }
    let (outcome, _) =
        messages::post_message(cx, channel, author, body, client_msg_id, thread_root)?;
    let seq = match &outcome {
        Ok(Applied::MessageChanged {
            seq,
            duplicate: false,
            ..
        }) => *seq,
        _ => return Ok(outcome),
    };
    let mut ids = Vec::with_capacity(files.len());
    for f in files {
        for sha in f.blobs() {
            cx.kv.put(keys::blob_ref(sha, &f.id), &())?;
            cx.kv.remove(keys::blob_released(sha));
        }
        cx.kv.put(keys::file_index(cx.index, &f.id), &())?;
        cx.kv.put(
            keys::file(&f.id),
            &FileRecord {
                file: f.clone(),
                channel: channel.to_string(),
                seq,
                uploader: author.to_string(),
                created_ms: cx.ts,
                deleted_ms: None,
            },
        )?;
        ids.push(f.id.clone());
    }
    cx.kv.put(keys::message_files(channel, seq), &ids)?;
    Ok(outcome)
}

/// Tombstones the files of message `seq` (its deletion): each record keeps its metadata with
/// `deleted_ms`, its blob references go, and a blob left without any is marked released at the
/// entry's time (the garbage collector's grace period starts there).
pub fn on_message_deleted(cx: &mut Ctx<'_, '_>, channel: &str, seq: u64) -> Result<(), StateError> {
    let Some(ids) = cx
        .kv
        .get::<Vec<String>>(&keys::message_files(channel, seq))?
    else {
        return Ok(());
    };
    for id in ids {
        let key = keys::file(&id);
        let Some(mut rec) = cx.kv.get::<FileRecord>(&key)? else {
            continue;
        };
        if rec.deleted_ms.is_some() {
            continue;
        }
        rec.deleted_ms = Some(cx.ts);
        for sha in rec.file.blobs() {
            cx.kv.remove(keys::blob_ref(sha, &id));
            if cx
                .kv
                .keys_with_prefix(&keys::blob_ref_prefix(sha))?
                .is_empty()
            {
                cx.kv.put(keys::blob_released(sha), &cx.ts)?;
            }
        }
        cx.kv.put(key, &rec)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::command::{ChannelKind, Command, Role};
    use crate::state::test_apply::{run, tree};
    use crate::storage::sm_store::StateReader;

    fn file(id: &str, chunks: &[&str]) -> NewFile {
        NewFile {
            id: id.into(),
            name: "a.txt".into(),
            size: 3,
            sha256: "cd".repeat(32),
            mime: "text/plain; charset=utf-8".into(),
            chunks: chunks.iter().map(|c| c.to_string()).collect(),
            width: None,
            height: None,
            thumbnail: None,
        }
    }

    fn post(id: &str, cmid: &str, chunks: &[&str]) -> Command {
        Command::PostMessageWithFiles {
            channel: "g".into(),
            author: "alice".into(),
            body: String::new(),
            client_msg_id: cmid.into(),
            thread_root: None,
            files: vec![file(id, chunks)],
        }
    }

    #[test]
    fn files_commit_with_their_message_and_deletion_releases_their_blobs() {
        let t = tree();
        let (a, b) = ("aa".repeat(32), "bb".repeat(32));
        let setup = run(
            &t,
            1,
            vec![
                Command::CreateUser {
                    username: "alice".into(),
                    password_hash: "x".into(),
                    role: Role::Member,
                },
                Command::CreateChannelV2 {
                    name: "g".into(),
                    creator: "alice".into(),
                    kind: ChannelKind::Public,
                    title: "g".into(),
                    topic: String::new(),
                    members: vec![],
                },
            ],
        );
        assert!(setup.iter().all(Result::is_ok), "{setup:?}");
        let id1 = "0".repeat(32);
        let id2 = "1".repeat(32);
        let out = run(&t, 2, vec![post(&id1, "m1", &[&a, &b])]);
        assert!(matches!(
            out[0],
            Ok(Applied::MessageChanged {
                seq: 1,
                duplicate: false,
                ..
            })
        ));
        // A retry with a fresh file id writes nothing and answers the original.
        let again = run(&t, 3, vec![post(&id2, "m1", &[&a])]);
        assert!(matches!(
            again[0],
            Ok(Applied::MessageChanged {
                seq: 1,
                duplicate: true,
                ..
            })
        ));
        let r = StateReader::for_tree(t.clone());
        assert!(r.file(&id2).unwrap().is_none());
        let view = r.message_view("g", 1).unwrap().unwrap();
        assert_eq!(view.attachments.len(), 1);
        assert_eq!(view.attachments[0].id, id1);
        assert!(r.blob_referenced(&a).unwrap() && r.blob_referenced(&b).unwrap());
        let key = keys::file(&id1);
        let value = t.get(&key).unwrap().unwrap();
        assert_eq!(
            live_blobs_of_record(&key, &value).unwrap(),
            vec![a.clone(), b.clone()]
        );
        assert!(live_blobs_of_record(b"u/alice", b"").unwrap().is_empty());
        assert_eq!(r.files_added_from(0, 10).unwrap().len(), 1);
        // A second file sharing chunk `a` keeps it referenced after the first is deleted.
        let out = run(&t, 4, vec![post(&id2, "m2", &[&a])]);
        assert!(out[0].is_ok(), "{out:?}");
        // Bad blob names and reused ids are refused before anything is written.
        let bad = run(&t, 5, vec![post(&"2".repeat(32), "m3", &["../x"])]);
        assert!(matches!(bad[0], Err(ApplyError::Invalid(_))));
        let reused = run(&t, 5, vec![post(&id1, "m4", &[&a])]);
        assert!(matches!(reused[0], Err(ApplyError::Conflict(_))));
        let del = run(
            &t,
            10,
            vec![Command::DeleteMessage {
                channel: "g".into(),
                seq: 1,
                by: "alice".into(),
            }],
        );
        assert!(del[0].is_ok());
        let r = StateReader::for_tree(t.clone());
        assert_eq!(r.file(&id1).unwrap().unwrap().deleted_ms, Some(10));
        let value = t.get(&key).unwrap().unwrap();
        assert!(
            live_blobs_of_record(&key, &value).unwrap().is_empty(),
            "a tombstoned file needs no blob"
        );
        assert!(
            r.message_view("g", 1)
                .unwrap()
                .unwrap()
                .attachments
                .is_empty()
        );
        assert!(
            r.blob_referenced(&a).unwrap(),
            "still used by the second file"
        );
        assert!(!r.blob_referenced(&b).unwrap());
        assert_eq!(r.blob_released(&b).unwrap(), Some(10));
        assert_eq!(r.blob_released(&a).unwrap(), None);
    }
}
