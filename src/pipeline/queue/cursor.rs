//! A destination's persisted position in the queue.
//!
//! A cursor file that cannot be written keeps its last saved value: after a restart the events
//! after it are delivered again (at least once), never skipped.

use super::{QueueError, io};
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// One destination's position in the queue: records below `committed` are done (delivered,
/// filtered or dead-lettered). Completions can arrive out of order when `concurrency` > 1; the
/// cursor only moves over a contiguous prefix, so a crash re-delivers, never skips.
pub struct Cursor {
    path: PathBuf,
    state: Mutex<CursorState>,
}

struct CursorState {
    committed: u64,
    persisted: u64,
    done: BTreeSet<u64>,
}

impl Cursor {
    /// Loads the cursor file, or creates it at `head` for a destination seen for the first time.
    pub fn open(path: &Path, head: u64) -> Result<Arc<Cursor>, QueueError> {
        let committed = match fs::read_to_string(path) {
            Ok(text) => text.trim().parse().unwrap_or_else(|_| {
                tracing::warn!(cursor = %path.display(), "queue: unreadable cursor file; re-delivering from the oldest retained record");
                0
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_atomically(path, head)?;
                head
            }
            Err(e) => return Err(QueueError::Io { path: path.to_path_buf(), source: e }),
        };
        Ok(Arc::new(Cursor {
            path: path.to_path_buf(),
            state: Mutex::new(CursorState {
                committed,
                persisted: committed,
                done: BTreeSet::new(),
            }),
        }))
    }

    pub fn committed(&self) -> u64 {
        self.state.lock().expect("cursor lock").committed
    }

    pub fn complete(&self, seqs: impl IntoIterator<Item = u64>) {
        let mut s = self.state.lock().expect("cursor lock");
        for seq in seqs {
            if seq >= s.committed {
                s.done.insert(seq);
            }
        }
        loop {
            let next = s.committed;
            if !s.done.remove(&next) {
                break;
            }
            s.committed += 1;
        }
    }

    /// Writes the committed position to disk if it moved since the last call.
    pub fn persist(&self) -> Result<(), QueueError> {
        let committed = {
            let s = self.state.lock().expect("cursor lock");
            if s.committed == s.persisted {
                return Ok(());
            }
            s.committed
        };
        write_atomically(&self.path, committed)?;
        self.state.lock().expect("cursor lock").persisted = committed;
        Ok(())
    }
}

fn write_atomically(path: &Path, value: u64) -> Result<(), QueueError> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(value.to_string().as_bytes())
        .map_err(io(&tmp))?;
    f.sync_data().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_moves_over_contiguous_completions_only() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cursor::open(&dir.path().join("c"), 5).unwrap();
        c.complete([6, 7]);
        assert_eq!(c.committed(), 5);
        c.complete([5]);
        assert_eq!(c.committed(), 8);
        c.persist().unwrap();
        assert_eq!(
            Cursor::open(&dir.path().join("c"), 0).unwrap().committed(),
            8
        );
    }
}
