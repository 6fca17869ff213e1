//! The dead-letter store: events given up on, kept on disk as JSON lines under
//! `<data-dir>/dlq/<destination>.jsonl`, listed and replayed by `hookline dlq`.
//!
//! Replay hands entries to the engine through `<data-dir>/spool/`: the running `hookline run`
//! (or the next one started on the data dir) moves them into the durable queue, addressed to
//! their destination only, and then deletes the spool file. A crash in between re-delivers.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    pub destination: String,
    pub event: Value,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: String,
    pub failed_at: String,
}

#[derive(Debug, thiserror::Error)]
#[error("dead-letter store {}: {source}", path.display())]
pub struct DlqError {
    path: PathBuf,
    source: std::io::Error,
}

fn err(path: &Path) -> impl FnOnce(std::io::Error) -> DlqError + '_ {
    move |source| DlqError {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone)]
pub struct DeadLetterStore {
    dir: PathBuf,
}

impl DeadLetterStore {
    pub fn new(data_dir: &Path) -> Self {
        DeadLetterStore {
            dir: data_dir.join("dlq"),
        }
    }

    fn file(&self, destination: &str) -> PathBuf {
        self.dir.join(format!("{destination}.jsonl"))
    }

    pub fn spool_dir(data_dir: &Path) -> PathBuf {
        data_dir.join("spool")
    }

    /// Appends and syncs the entries before returning: they are only then off the queue. A
    /// failed append is cut off again, so it never merges with the entries after it.
    pub fn append(&self, entries: &[DeadLetter]) -> Result<(), DlqError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        fs::create_dir_all(&self.dir).map_err(err(&self.dir))?;
        let path = self.file(&first.destination);
        let mut f = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(err(&path))?;
        f.lock().map_err(err(&path))?;
        let start = f.metadata().map_err(err(&path))?.len();
        let mut buf = Vec::new();
        if !ends_with_newline(&f, start).map_err(err(&path))? {
            // A line a crash left unfinished stays on its own (and is skipped when read).
            buf.push(b'\n');
        }
        for e in entries {
            serde_json::to_writer(&mut buf, e).expect("dead letters serialize");
            buf.push(b'\n');
        }
        let written = f.write_all(&buf).and_then(|()| f.sync_data());
        if let Err(e) = written {
            if let Err(cut) = f.set_len(start).and_then(|()| f.sync_data()) {
                tracing::warn!(file = %path.display(), error = %cut, "dead-letter store: cannot cut off a failed append");
            }
            return Err(err(&path)(e));
        }
        Ok(())
    }

    /// Every entry, oldest first per destination; a partial last line (crash mid-write) is skipped.
    pub fn list(&self) -> Result<Vec<DeadLetter>, DlqError> {
        let mut out = Vec::new();
        for path in self.files()? {
            let f = File::open(&path).map_err(err(&path))?;
            f.lock_shared().map_err(err(&path))?;
            out.extend(read_entries(&f, &path)?);
        }
        Ok(out)
    }

    fn files(&self) -> Result<Vec<PathBuf>, DlqError> {
        let mut files = match fs::read_dir(&self.dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(DlqError {
                    path: self.dir.clone(),
                    source: e,
                });
            }
        };
        files.sort();
        Ok(files)
    }

    /// Moves the entries (of one destination, or all) to the spool for re-queueing; returns how many.
    pub fn replay(&self, data_dir: &Path, destination: Option<&str>) -> Result<usize, DlqError> {
        let spool = Self::spool_dir(data_dir);
        fs::create_dir_all(&spool).map_err(err(&spool))?;
        let mut moved = 0;
        for path in self.files()? {
            let mut f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(err(&path))?;
            f.lock().map_err(err(&path))?;
            let entries: Vec<DeadLetter> = read_entries(&f, &path)?
                .into_iter()
                .filter(|e| destination.is_none_or(|d| d == e.destination))
                .collect();
            if entries.is_empty() {
                continue;
            }
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("dlq");
            let spooled = spool.join(format!(
                "{}-{stem}.jsonl",
                chrono::Utc::now().format("%Y%m%dT%H%M%S%.9f")
            ));
            let tmp = spooled.with_extension("tmp");
            let mut out = File::create(&tmp).map_err(err(&tmp))?;
            for e in &entries {
                serde_json::to_writer(&mut out, e).expect("dead letters serialize");
                out.write_all(b"\n").map_err(err(&tmp))?;
            }
            out.sync_all().map_err(err(&tmp))?;
            fs::rename(&tmp, &spooled).map_err(err(&spooled))?;
            File::open(&spool)
                .and_then(|d| d.sync_all())
                .map_err(err(&spool))?;
            // Only entries of one destination live in a file, so replaying it empties the file.
            f.set_len(0).map_err(err(&path))?;
            f.flush().map_err(err(&path))?;
            f.sync_all().map_err(err(&path))?;
            moved += entries.len();
        }
        Ok(moved)
    }
}

fn ends_with_newline(f: &File, len: u64) -> std::io::Result<bool> {
    if len == 0 {
        return Ok(true);
    }
    let mut last = [0u8; 1];
    f.read_exact_at(&mut last, len - 1)?;
    Ok(last[0] == b'\n')
}

fn read_entries(f: &File, path: &Path) -> Result<Vec<DeadLetter>, DlqError> {
    let mut out = Vec::new();
    for line in BufReader::new(f).lines() {
        let line = line.map_err(err(path))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(&line) {
            Ok(entry) => out.push(entry),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "dead-letter store: skipping an unreadable line")
            }
        }
    }
    Ok(out)
}

/// Spool files waiting to be re-queued, oldest first.
pub fn spooled_files(data_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(DeadLetterStore::spool_dir(data_dir))
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

pub fn read_spooled(path: &Path) -> Result<Vec<DeadLetter>, DlqError> {
    let f = File::open(path).map_err(err(path))?;
    read_entries(&f, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(dest: &str, n: u32) -> DeadLetter {
        DeadLetter {
            destination: dest.into(),
            event: serde_json::json!({"n": n}),
            attempts: n,
            last_status: Some(400),
            last_error: "bad".into(),
            failed_at: "t".into(),
        }
    }

    #[test]
    fn an_unfinished_line_never_swallows_the_next_entry() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeadLetterStore::new(dir.path());
        store.append(&[entry("a", 1)]).unwrap();
        let path = store.file("a");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"destination":"a","ev"#).unwrap();
        store.append(&[entry("a", 2)]).unwrap();
        assert_eq!(store.list().unwrap(), vec![entry("a", 1), entry("a", 2)]);
    }

    #[test]
    fn append_list_and_replay_to_spool() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeadLetterStore::new(dir.path());
        store.append(&[entry("a", 1), entry("a", 2)]).unwrap();
        store.append(&[entry("b", 3)]).unwrap();
        assert_eq!(store.list().unwrap().len(), 3);
        assert_eq!(store.replay(dir.path(), Some("a")).unwrap(), 2);
        assert_eq!(store.list().unwrap(), vec![entry("b", 3)]);
        let spooled = spooled_files(dir.path());
        assert_eq!(spooled.len(), 1);
        assert_eq!(
            read_spooled(&spooled[0]).unwrap(),
            vec![entry("a", 1), entry("a", 2)]
        );
    }
}
