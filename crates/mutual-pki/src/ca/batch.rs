//! Batch issuance for manufacturing lines (`mutual cert issue --batch`): thousands of rows in
//! chunks, one store transaction per chunk, resumable after a `kill -9` at any instant.
//!
//! A chunk ([`Ca::issue_chunk`]) goes:
//! 1. every request is checked ([`Ca::precheck`]: the profile, a CSR's key and self-signature)
//!    before any of the chunk is signed; a refused row is reported and the others go on;
//! 2. the rest are signed by [`Ca::sign`], the signer of [`Ca::issue`] (there is no other);
//! 3. their files are staged: written and fsynced under temporary names in the output directory;
//! 4. a write-ahead journal (`.mutual-batch.pending`) names each row, its serial and its staged
//!    files;
//! 5. the rows are recorded by one `insert_many` (one transaction);
//! 6. the files are renamed into place, the rows appended to the done-log
//!    (`.mutual-batch.done`), the journal removed.
//!
//! [`BatchDir::open`] finishes what a kill interrupted. A journal whose serials are in the store
//! belongs to a committed chunk: its staged files are renamed into place (roll forward) and its
//! rows marked done. A journal whose serials are not is a chunk that never committed: its staged
//! files are removed and its rows are issued again. The journal is on disk before the commit, so
//! a committed row is always in the done-log or in the journal: no row is issued twice. A row is
//! known by its key (its output file stem), recorded in the inventory as
//! `requested_by = batch:<batch id>:<key>`.
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use mutual_store::{Inventory, NewCert, Store};

use super::{now, Ca, IssueRequest, Issued};
use crate::keys::{self, StagedFile};
use crate::PkiError;

/// The batch's identity, made by the first run in an output directory.
const STATE: &str = ".mutual-batch.json";
/// One `KEY<TAB>SERIAL` line per row done, appended (and fsynced) per committed chunk.
const DONE_LOG: &str = ".mutual-batch.done";
/// The chunk in flight (see the module doc).
const PENDING: &str = ".mutual-batch.pending";

#[derive(serde::Serialize, serde::Deserialize)]
struct State {
    id: String,
    /// The CA whose inventory says which chunk committed: a resume against another CA would
    /// take a committed chunk for one that was not and issue its rows again.
    ca_root_sha256: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct PendingRow {
    key: String,
    serial: String,
    /// (staged temporary file, final name)
    files: Vec<(PathBuf, PathBuf)>,
}

/// One row of a batch: its key (the output file stem) and what to issue. The request's
/// `output` and `token` are ignored: the batch writes `KEY.pem` (and `KEY.key` for a generated
/// key) in its directory, and a batch row has no token.
#[derive(Clone, Debug)]
pub struct BatchRow {
    pub key: String,
    pub request: IssueRequest,
}

/// What [`BatchDir::open`] found of an interrupted run.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Resumed {
    /// Rows of a chunk that had committed: their files were put in place.
    pub rolled_forward: usize,
    /// Rows of a chunk that had not: their staged files were removed; they are issued again.
    pub rolled_back: usize,
    /// Temporary files of a chunk killed before its journal was written, removed.
    pub stale_removed: usize,
}

/// A batch's output directory: its id and the rows already done. The caller holds an exclusive
/// lock on the directory for as long as it uses this.
#[derive(Debug)]
pub struct BatchDir {
    dir: PathBuf,
    id: String,
    done: HashMap<String, String>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |error| PkiError::Io {
        path: path.to_path_buf(),
        error,
    }
}

fn corrupt(path: &Path, e: impl std::fmt::Display) -> PkiError {
    PkiError::Malformed {
        detail: format!(
            "{}: {e} (written by `cert issue --batch`; it was edited or damaged)",
            path.display()
        ),
    }
}

impl BatchDir {
    /// Opens (or starts) the batch of `ca` in `dir` and finishes an interrupted chunk. A
    /// directory holding another CA's batch is refused.
    pub async fn open(dir: &Path, ca: &Ca) -> Result<(BatchDir, Resumed), PkiError> {
        let store = ca.store();
        let state_path = dir.join(STATE);
        let root = ca.root_fingerprint_sha256();
        let id = match std::fs::read(&state_path) {
            Ok(b) => {
                let state: State =
                    serde_json::from_slice(&b).map_err(|e| corrupt(&state_path, e))?;
                if state.ca_root_sha256 != root {
                    return Err(PkiError::BatchOfAnotherCa {
                        dir: dir.to_path_buf(),
                        theirs: state.ca_root_sha256,
                        ours: root,
                    });
                }
                state.id
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = hex::encode(rand::random::<[u8; 8]>());
                let state = State {
                    id: id.clone(),
                    ca_root_sha256: root,
                };
                let text = serde_json::to_vec(&state).map_err(|e| corrupt(&state_path, e))?;
                keys::write_atomic(&state_path, &text, 0o644, false)?;
                id
            }
            Err(e) => return Err(io(&state_path)(e)),
        };
        let mut batch = BatchDir {
            dir: dir.to_path_buf(),
            id,
            done: read_done(&dir.join(DONE_LOG))?,
        };
        let mut resumed = batch.recover(store).await?;
        resumed.stale_removed = keys::remove_all_stale_staged(dir);
        Ok((batch, resumed))
    }

    /// The batch id (in every row's `requested_by`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The serial of a row already done, by key.
    pub fn done(&self, key: &str) -> Option<&str> {
        self.done.get(key).map(String::as_str)
    }

    /// How many rows are done.
    pub fn done_count(&self) -> usize {
        self.done.len()
    }

    /// `requested_by` of a row.
    pub fn requested_by(&self, key: &str) -> String {
        format!("batch:{}:{key}", self.id)
    }

    /// The certificate chain file of a row, and its key file (written for a generated key).
    pub fn targets(&self, key: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{key}.pem")),
            self.dir.join(format!("{key}.key")),
        )
    }

    /// Rolls the pending chunk forward (committed) or back (not), see the module doc.
    async fn recover(&mut self, store: &Store) -> Result<Resumed, PkiError> {
        let path = self.dir.join(PENDING);
        let rows: Vec<PendingRow> = match std::fs::read(&path) {
            // Written atomically: present means complete.
            Ok(b) => serde_json::from_slice(&b).map_err(|e| corrupt(&path, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Resumed::default()),
            Err(e) => return Err(io(&path)(e)),
        };
        let mut resumed = Resumed::default();
        // One transaction: either all of the chunk's serials are in the store or none is.
        let committed = match rows.first() {
            Some(r) => store
                .get(&r.serial, now().unix_timestamp())
                .await?
                .is_some(),
            None => false,
        };
        let mut done = Vec::new();
        for r in rows {
            for (staged, target) in &r.files {
                if committed {
                    match std::fs::rename(staged, target) {
                        Ok(()) => {}
                        // Renamed before the kill.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound && target.exists() => {}
                        Err(e) => return Err(io(staged)(e)),
                    }
                } else {
                    match std::fs::remove_file(staged) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io(staged)(e)),
                    }
                }
            }
            if committed {
                resumed.rolled_forward += 1;
                // Killed after the done-log append but before the journal was removed.
                if self.done.get(&r.key) != Some(&r.serial) {
                    done.push((r.key, r.serial));
                }
            } else {
                resumed.rolled_back += 1;
            }
        }
        keys::sync_dir(&self.dir);
        self.append_done(&done)?;
        remove_file_synced(&path)?;
        Ok(resumed)
    }

    fn append_done(&mut self, rows: &[(String, String)]) -> Result<(), PkiError> {
        if rows.is_empty() {
            return Ok(());
        }
        let path = self.dir.join(DONE_LOG);
        let mut text = String::new();
        for (key, serial) in rows {
            text.push_str(&format!("{key}\t{serial}\n"));
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        f.write_all(text.as_bytes()).map_err(io(&path))?;
        f.sync_data().map_err(io(&path))?;
        for (key, serial) in rows {
            self.done.insert(key.clone(), serial.clone());
        }
        Ok(())
    }
}

/// The done-log; a last line without its newline was cut by a kill while it was appended, and
/// its chunk's journal is still there to redo it: it is cut off, so that the next append starts
/// a line of its own.
fn read_done(path: &Path) -> Result<HashMap<String, String>, PkiError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(io(path)(e)),
    };
    let whole = text.rfind('\n').map_or(0, |i| i + 1);
    if whole < text.len() {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io(path))?;
        f.set_len(whole as u64).map_err(io(path))?;
        f.sync_data().map_err(io(path))?;
    }
    let mut done = HashMap::new();
    for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
        let (key, serial) = line
            .trim_end_matches('\n')
            .split_once('\t')
            .ok_or_else(|| corrupt(path, format!("line {line:?} is not KEY<TAB>SERIAL")))?;
        done.insert(key.to_string(), serial.to_string());
    }
    Ok(done)
}

fn remove_file_synced(path: &Path) -> Result<(), PkiError> {
    match std::fs::remove_file(path) {
        Ok(()) => {
            if let Some(d) = path.parent() {
                keys::sync_dir(d);
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path)(e)),
    }
}

/// A row key becomes a file name and a done-log field: no path separator, no leading dot (the
/// batch's own files), no control character (a tab or newline would break the done-log).
fn check_key(key: &str) -> Result<(), PkiError> {
    if key.is_empty()
        || key.starts_with('.')
        || key.contains(['/', '\\'])
        || key.chars().any(char::is_control)
    {
        return Err(PkiError::InvalidName {
            name: key.to_string(),
            detail: "a batch row's name is its output file stem: no '/', not starting with '.', \
                     no control characters"
                .into(),
        });
    }
    Ok(())
}

/// Fsyncs `files` from a few threads at once, so that the filesystem commits them in groups.
fn sync_all(files: &[StagedFile]) -> Result<(), PkiError> {
    const THREADS: usize = 16;
    let per = files.len().div_ceil(THREADS).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(per)
            .map(|part| s.spawn(move || part.iter().try_for_each(StagedFile::sync)))
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join().unwrap_or_else(|_| {
                Err(PkiError::Generate {
                    detail: "a thread syncing staged files panicked".into(),
                })
            })
        })
    })
}

/// Staged files not yet named by a journal: removed if the chunk stops before its journal.
struct Staged(Vec<PathBuf>);

impl Drop for Staged {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Ca {
    /// Issues one chunk of a batch (see the module doc). The outer error stops the batch (the
    /// store or the output directory failed; what was in flight is finished by the next
    /// [`BatchDir::open`]); the inner results are per row, in order.
    pub async fn issue_chunk(
        &self,
        batch: &mut BatchDir,
        rows: &[BatchRow],
    ) -> Result<Vec<Result<Issued, PkiError>>, PkiError> {
        let (results, journal) = self.stage_chunk(batch, rows)?;
        if journal.is_empty() {
            return Ok(results.into_iter().map(|r| r.map(|p| p.issued)).collect());
        }
        let records: Vec<NewCert> = results
            .iter()
            .filter_map(|r| r.as_ref().ok().map(|p| p.record.clone()))
            .collect();
        if let Err(e) = self.store.insert_many(&records).await {
            // Whether it committed is the store's to say (a connection lost during COMMIT):
            // recovery asks it, as the next run would.
            batch.recover(&self.store).await?;
            return Err(e.into());
        }
        for row in &journal {
            for (tmp, target) in &row.files {
                std::fs::rename(tmp, target).map_err(io(target))?;
            }
        }
        keys::sync_dir(&batch.dir);
        let done: Vec<(String, String)> = journal.into_iter().map(|r| (r.key, r.serial)).collect();
        batch.append_done(&done)?;
        remove_file_synced(&batch.dir.join(PENDING))?;
        Ok(results.into_iter().map(|r| r.map(|p| p.issued)).collect())
    }

    /// Steps 1 to 4 of the module doc: checks, signs, stages the files and writes the journal
    /// (when any row passed). Nothing is recorded yet.
    #[allow(clippy::type_complexity)]
    fn stage_chunk(
        &self,
        batch: &BatchDir,
        rows: &[BatchRow],
    ) -> Result<
        (
            Vec<Result<super::issue::Pending, PkiError>>,
            Vec<PendingRow>,
        ),
        PkiError,
    > {
        let requests: Vec<IssueRequest> = rows
            .iter()
            .map(|r| {
                let mut q = r.request.clone();
                q.profile.requested_by = Some(batch.requested_by(&r.key));
                q.output = None;
                q.token = None;
                q
            })
            .collect();
        // Every row checked before any is signed.
        let checked: Vec<Result<(), PkiError>> = rows
            .iter()
            .zip(&requests)
            .map(|(r, q)| check_key(&r.key).and_then(|()| self.precheck(q)))
            .collect();
        let results: Vec<Result<super::issue::Pending, PkiError>> = requests
            .iter()
            .zip(checked)
            .map(|(q, c)| c.and_then(|()| self.sign(q)))
            .collect();
        // Written first, made durable together (one fsync after another would cost a journal
        // commit of the filesystem per file), then kept under their temporary names.
        let mut files = Vec::new();
        let mut owners = Vec::new();
        for (i, (row, res)) in rows.iter().zip(results.iter()).enumerate() {
            let Ok(p) = res else { continue };
            let (cert_path, key_path) = batch.targets(&row.key);
            if let Some(k) = &p.issued.key_pem {
                files.push(StagedFile::write_unsynced(&key_path, k.as_bytes(), 0o600)?);
                owners.push(i);
            }
            files.push(StagedFile::write_unsynced(
                &cert_path,
                p.issued.chain_pem.as_bytes(),
                0o644,
            )?);
            owners.push(i);
        }
        sync_all(&files)?;
        let mut staged = Staged(Vec::new());
        let mut journal: Vec<PendingRow> = Vec::new();
        for (file, i) in files.into_iter().zip(owners) {
            let target = file.target().to_path_buf();
            let tmp = file.keep()?;
            staged.0.push(tmp.clone());
            let serial = match &results[i] {
                Ok(p) => p.issued.serial_hex.clone(),
                Err(_) => continue,
            };
            match journal.last_mut() {
                Some(last) if last.serial == serial => last.files.push((tmp, target)),
                _ => journal.push(PendingRow {
                    key: rows[i].key.clone(),
                    serial,
                    files: vec![(tmp, target)],
                }),
            }
        }
        if !journal.is_empty() {
            let pending_path = batch.dir.join(PENDING);
            let text = serde_json::to_vec(&journal).map_err(|e| corrupt(&pending_path, e))?;
            keys::write_atomic(&pending_path, &text, 0o600, false)?;
            // From here the journal owns the staged files.
            staged.0.clear();
        }
        Ok((results, journal))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::ca::IssueOptions;
    use crate::KeyType;

    fn rows(names: &[&str]) -> Vec<BatchRow> {
        names
            .iter()
            .map(|n| BatchRow {
                key: n.to_string(),
                request: IssueRequest::generate(
                    IssueOptions {
                        name: n.to_string(),
                        ..Default::default()
                    },
                    KeyType::EcdsaP256,
                ),
            })
            .collect()
    }

    /// The output directory once rows a and b are done, nothing staged or pending.
    const A_AND_B: [&str; 6] = [
        ".mutual-batch.done",
        ".mutual-batch.json",
        "a.key",
        "a.pem",
        "b.key",
        "b.pem",
    ];

    fn listing(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// The instants a kill can hit between the journal and the done-log, each resumed by
    /// `BatchDir::open`: committed -> files in place and rows done; not committed -> staged
    /// files gone and rows to do; a stale staged file and a cut done-log line cleaned up.
    #[tokio::test]
    async fn an_interrupted_chunk_is_rolled_forward_or_back() {
        let d = tempfile::tempdir().unwrap();
        let ca = crate::testing::new_ca(d.path(), "ca").await;
        let out = d.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let (batch, _) = BatchDir::open(&out, &ca).await.unwrap();

        // Killed after the commit, before any rename.
        let (results, journal) = ca.stage_chunk(&batch, &rows(&["a", "b"])).unwrap();
        let records: Vec<NewCert> = results
            .iter()
            .map(|r| r.as_ref().unwrap().record.clone())
            .collect();
        let chains: Vec<String> = results
            .iter()
            .map(|r| r.as_ref().unwrap().issued.chain_pem.clone())
            .collect();
        assert_eq!(journal.len(), 2);
        ca.store().insert_many(&records).await.unwrap();
        drop(batch);
        let (batch, resumed) = BatchDir::open(&out, &ca).await.unwrap();
        assert_eq!((resumed.rolled_forward, resumed.rolled_back), (2, 0));
        assert_eq!(batch.done("a"), Some(records[0].serial.as_str()));
        assert_eq!(
            std::fs::read_to_string(out.join("b.pem")).unwrap(),
            chains[1]
        );
        assert_eq!(listing(&out), A_AND_B);
        assert_eq!(
            batch.requested_by("a"),
            ca.store()
                .get(&records[0].serial, 0)
                .await
                .unwrap()
                .unwrap()
                .requested_by
                .unwrap()
        );

        // Killed before the commit; a stale staged file of an earlier kill; a cut log line.
        let (_, journal) = ca.stage_chunk(&batch, &rows(&["c"])).unwrap();
        let serial_c = journal[0].serial.clone();
        std::fs::write(out.join(".mutual-tmp-d.pem-abcdef"), "x").unwrap();
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .open(out.join(DONE_LOG))
            .unwrap();
        log.write_all(b"c\t00").unwrap();
        drop((batch, log));
        let (mut batch, resumed) = BatchDir::open(&out, &ca).await.unwrap();
        assert_eq!(
            (
                resumed.rolled_forward,
                resumed.rolled_back,
                resumed.stale_removed
            ),
            (0, 1, 1)
        );
        assert_eq!((batch.done("c"), batch.done_count()), (None, 2));
        assert!(ca.store().get(&serial_c, 0).await.unwrap().is_none());
        assert_eq!(listing(&out), A_AND_B);

        // The re-run issues c, once; a and b's log lines are not written again.
        let r = ca.issue_chunk(&mut batch, &rows(&["c"])).await.unwrap();
        assert!(r[0].is_ok());
        let log = std::fs::read_to_string(out.join(DONE_LOG)).unwrap();
        assert_eq!(log.lines().count(), 3, "{log}");
        assert!(log.ends_with(&format!("c\t{}\n", r[0].as_ref().unwrap().serial_hex)));
        let (_, resumed) = BatchDir::open(&out, &ca).await.unwrap();
        assert_eq!(resumed.rolled_forward + resumed.rolled_back, 0);

        // Another CA cannot resume (it would take committed chunks for uncommitted ones).
        let other = crate::testing::new_ca(d.path(), "other").await;
        let err = BatchDir::open(&out, &other).await.unwrap_err().to_string();
        assert!(err.contains("holds a batch of another CA"), "{err}");
        assert!(err.contains(&ca.root_fingerprint_sha256()), "{err}");
    }
}
