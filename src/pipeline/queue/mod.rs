//! The durable queue: an append-only log of segment files under `<data-dir>/queue`, shared by
//! every destination, each of which reads it from its own persisted cursor.
//!
//! Record: `[u32 len][u32 crc32(seq ‖ payload)][u64 seq][payload]`, little-endian. Appends are
//! group-committed: one `fdatasync` covers every append waiting at that moment, and only then are
//! the appenders answered, so "200 to the sender" means "on disk". A torn record at the tail (a
//! crash mid-write) is detected by its length or checksum and cut off when the queue is opened.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot, watch};

const HEADER: usize = 16;
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// A record larger than this is corruption, not data (ingestion caps requests far below it).
const MAX_RECORD: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the queue writer has stopped")]
    Closed,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> QueueError + '_ {
    move |source| QueueError::Io {
        path: path.to_path_buf(),
        source,
    }
}

struct Append {
    payloads: Vec<Vec<u8>>,
    done: oneshot::Sender<Result<(), String>>,
}

/// Handle for appending; cheap to clone.
#[derive(Clone)]
pub struct Queue {
    dir: PathBuf,
    appends: mpsc::Sender<Append>,
    /// The sequence number the next durable record will get: everything below it is on disk.
    head: watch::Receiver<u64>,
}

impl Queue {
    /// Opens (or creates) the queue in `dir`, truncating a torn tail, and starts its writer thread.
    pub fn open(dir: &Path) -> Result<Queue, QueueError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let segments = list_segments(dir)?;
        let (file, path, next_seq, size) = match segments.last() {
            Some(&(first, ref path)) => {
                let (next, valid_len) = scan_valid(path, first)?;
                let file = OpenOptions::new()
                    .read(true)
                    .append(true)
                    .open(path)
                    .map_err(io(path))?;
                let actual = file.metadata().map_err(io(path))?.len();
                if actual != valid_len {
                    tracing::warn!(segment = %path.display(), cut_bytes = actual - valid_len, "queue: cutting off a torn record left by a crash");
                    file.set_len(valid_len).map_err(io(path))?;
                    file.sync_all().map_err(io(path))?;
                }
                (file, path.clone(), next, valid_len)
            }
            None => {
                let path = segment_path(dir, 0);
                let file = create_segment(&path)?;
                (file, path, 0, 0)
            }
        };
        let (head_tx, head) = watch::channel(next_seq);
        let (appends, rx) = mpsc::channel(1024);
        let writer = Writer {
            dir: dir.to_path_buf(),
            path,
            file: BufWriter::with_capacity(1 << 20, file),
            size,
            next_seq,
            head: head_tx,
        };
        std::thread::Builder::new()
            .name("hookline-queue-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(io(dir))?;
        Ok(Queue {
            dir: dir.to_path_buf(),
            appends,
            head,
        })
    }

    /// Appends the payloads and returns once they are durably on disk.
    pub async fn append(&self, payloads: Vec<Vec<u8>>) -> Result<(), QueueError> {
        let (done, wait) = oneshot::channel();
        self.appends
            .send(Append { payloads, done })
            .await
            .map_err(|_| QueueError::Closed)?;
        wait.await
            .map_err(|_| QueueError::Closed)?
            .map_err(|e| QueueError::Io {
                path: self.dir.clone(),
                source: std::io::Error::other(e),
            })
    }

    pub fn head(&self) -> u64 {
        *self.head.borrow()
    }

    /// A reader positioned at `from` (the first sequence number it will return).
    pub fn reader(&self, from: u64) -> Reader {
        Reader {
            dir: self.dir.clone(),
            head: self.head.clone(),
            next: from,
            file: None,
        }
    }

    /// Deletes segments every record of which is below `min_cursor` (all destinations are past it).
    pub fn remove_consumed(&self, min_cursor: u64) -> Result<usize, QueueError> {
        let segments = list_segments(&self.dir)?;
        let mut removed = 0;
        for pair in segments.windows(2) {
            let (_, ref path) = pair[0];
            let (next_first, _) = pair[1];
            if next_first <= min_cursor {
                fs::remove_file(path).map_err(io(path))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

struct Writer {
    dir: PathBuf,
    path: PathBuf,
    file: BufWriter<File>,
    size: u64,
    next_seq: u64,
    head: watch::Sender<u64>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Append>) {
        while let Some(first) = rx.blocking_recv() {
            let mut group = vec![first];
            while let Ok(more) = rx.try_recv() {
                group.push(more);
            }
            let result = self.write_group(&group).map_err(|e| e.to_string());
            if let Err(e) = &result {
                tracing::error!(error = %e, "queue: append failed; the senders get an error and may retry");
            }
            for append in group {
                let _ = append.done.send(result.clone());
            }
        }
    }

    fn write_group(&mut self, group: &[Append]) -> Result<(), QueueError> {
        let start_seq = self.next_seq;
        let start_size = self.size;
        let outcome = (|| {
            for payload in group.iter().flat_map(|a| &a.payloads) {
                if self.size >= SEGMENT_BYTES {
                    self.rotate()?;
                }
                let seq = self.next_seq;
                let mut crc = crc32fast::Hasher::new();
                crc.update(&seq.to_le_bytes());
                crc.update(payload);
                let mut header = [0u8; HEADER];
                header[0..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
                header[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
                header[8..16].copy_from_slice(&seq.to_le_bytes());
                self.file.write_all(&header).map_err(io(&self.path))?;
                self.file.write_all(payload).map_err(io(&self.path))?;
                self.size += (HEADER + payload.len()) as u64;
                self.next_seq += 1;
            }
            self.file.flush().map_err(io(&self.path))?;
            self.file.get_ref().sync_data().map_err(io(&self.path))
        })();
        match outcome {
            Ok(()) => {
                self.head.send_replace(self.next_seq);
                Ok(())
            }
            Err(e) => {
                // Nothing of a failed group was acknowledged: cut it off so sequence numbers stay dense.
                if self.next_seq != start_seq && self.size > start_size {
                    let _ = self.file.flush();
                    let _ = self.file.get_ref().set_len(start_size);
                }
                self.next_seq = start_seq;
                self.size = start_size;
                Err(e)
            }
        }
    }

    fn rotate(&mut self) -> Result<(), QueueError> {
        self.file.flush().map_err(io(&self.path))?;
        self.file.get_ref().sync_data().map_err(io(&self.path))?;
        self.head.send_replace(self.next_seq);
        self.path = segment_path(&self.dir, self.next_seq);
        self.file = BufWriter::with_capacity(1 << 20, create_segment(&self.path)?);
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        self.size = 0;
        Ok(())
    }
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.log"))
}

fn create_segment(path: &Path) -> Result<File, QueueError> {
    OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)
        .map_err(io(path))
}

fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, QueueError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let first = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(first) = first {
            out.push((first, path));
        }
    }
    out.sort();
    Ok(out)
}

/// Reads one record; `Ok(None)` at a clean end of file or a torn/corrupt record.
fn read_record(r: &mut impl Read) -> std::io::Result<Option<(u64, Vec<u8>)>> {
    let mut header = [0u8; HEADER];
    match r.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let seq = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    if len > MAX_RECORD {
        return Ok(None);
    }
    let mut payload = vec![0u8; len];
    match r.read_exact(&mut payload) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[8..16]);
    hasher.update(&payload);
    Ok((hasher.finalize() == crc).then_some((seq, payload)))
}

/// The sequence number after the last valid record of a segment, and the byte length they span.
fn scan_valid(path: &Path, first_seq: u64) -> Result<(u64, u64), QueueError> {
    let mut r = BufReader::new(File::open(path).map_err(io(path))?);
    let (mut next, mut len) = (first_seq, 0u64);
    while let Some((seq, payload)) = read_record(&mut r).map_err(io(path))? {
        if seq != next {
            break;
        }
        next += 1;
        len += (HEADER + payload.len()) as u64;
    }
    Ok((next, len))
}

/// Follows the log from a position, waiting for new durable records.
pub struct Reader {
    dir: PathBuf,
    head: watch::Receiver<u64>,
    next: u64,
    file: Option<(PathBuf, BufReader<File>)>,
}

impl Reader {
    /// The next record at or after the reader's position, waiting until one is durable.
    pub async fn next(&mut self) -> Result<(u64, Vec<u8>), QueueError> {
        loop {
            if self.next < *self.head.borrow_and_update()
                && let Some(record) = self.read_available()?
            {
                return Ok(record);
            }
            if self.next >= *self.head.borrow() && self.head.changed().await.is_err() {
                return Err(QueueError::Closed);
            }
        }
    }

    /// Reads `self.next` (known to be durable) from disk, moving to later segments as needed.
    fn read_available(&mut self) -> Result<Option<(u64, Vec<u8>)>, QueueError> {
        for _ in 0..3 {
            if self.file.is_none() {
                self.open_at(self.next)?;
            }
            let Some((path, file)) = self.file.as_mut() else {
                return Ok(None);
            };
            match read_record(file).map_err(io(path))? {
                Some((seq, payload)) if seq >= self.next => {
                    self.next = seq + 1;
                    return Ok(Some((seq, payload)));
                }
                Some(_) => continue,
                None => {
                    // End of this segment (or a corrupt record): continue in the segment holding `next`.
                    let path = path.clone();
                    self.file = None;
                    let segments = list_segments(&self.dir)?;
                    let later = segments
                        .iter()
                        .find(|(first, p)| *first >= self.next && *p != path);
                    match later {
                        Some(&(first, _)) if first > self.next => {
                            tracing::error!(
                                skipped_from = self.next,
                                to = first,
                                "queue: records missing or corrupt; skipping to the next segment"
                            );
                            self.next = first;
                        }
                        Some(_) => {}
                        None => return Ok(None),
                    }
                }
            }
        }
        Ok(None)
    }

    fn open_at(&mut self, seq: u64) -> Result<(), QueueError> {
        let segments = list_segments(&self.dir)?;
        let Some((first, path)) = segments
            .iter()
            .rev()
            .find(|(first, _)| *first <= seq)
            .cloned()
            .or_else(|| segments.first().cloned())
        else {
            return Ok(());
        };
        if first > seq {
            self.next = first;
        }
        let mut file = BufReader::with_capacity(1 << 16, File::open(&path).map_err(io(&path))?);
        // Skip records before `seq` within the segment; their length prefixes make this cheap.
        let mut pos = 0u64;
        loop {
            let mut header = [0u8; HEADER];
            if file.read_exact(&mut header).is_err() {
                break;
            }
            let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as u64;
            let rec_seq = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
            if rec_seq >= self.next {
                break;
            }
            pos += HEADER as u64 + len;
            file.seek(SeekFrom::Start(pos)).map_err(io(&path))?;
        }
        file.seek(SeekFrom::Start(pos)).map_err(io(&path))?;
        self.file = Some((path, file));
        Ok(())
    }
}

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

    #[tokio::test]
    async fn appends_are_read_back_in_order_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path()).unwrap();
        q.append(vec![b"a".to_vec(), b"b".to_vec()]).await.unwrap();
        q.append(vec![b"c".to_vec()]).await.unwrap();
        let mut r = q.reader(1);
        assert_eq!(r.next().await.unwrap(), (1, b"b".to_vec()));
        assert_eq!(r.next().await.unwrap(), (2, b"c".to_vec()));
        drop(q);
        let q = Queue::open(dir.path()).unwrap();
        assert_eq!(q.head(), 3);
    }

    #[tokio::test]
    async fn torn_tail_is_cut_off_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let q = Queue::open(dir.path()).unwrap();
            q.append(vec![b"whole".to_vec()]).await.unwrap();
        }
        let seg = segment_path(dir.path(), 0);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(f);
        let q = Queue::open(dir.path()).unwrap();
        assert_eq!(q.head(), 1);
        q.append(vec![b"next".to_vec()]).await.unwrap();
        let mut r = q.reader(0);
        assert_eq!(r.next().await.unwrap().1, b"whole");
        assert_eq!(r.next().await.unwrap(), (1, b"next".to_vec()));
    }

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
