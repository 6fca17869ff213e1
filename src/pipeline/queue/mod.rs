//! The durable queue: an append-only log of segment files under `<data-dir>/queue`, shared by
//! every destination, each of which reads it from its own persisted cursor ([`Cursor`]).
//!
//! Appends are group-committed: one `fdatasync` covers every append waiting at that moment, and
//! only then are the appenders answered, so "200 to the sender" means "on disk".
//!
//! A failed append leaves no trace: when a write or `fdatasync` fails, nothing of that group is
//! acknowledged, the segment is cut back to its last acknowledged record and sealed (a failed
//! `fdatasync` may have dropped pages, so the file is not trusted for more), and the next append
//! starts a new segment. Readers never look past what was acknowledged: in the segment being
//! written, past its durable length; in a sealed one, past the next segment's first sequence
//! number. Damage found later (a bad sector, a flipped bit) is skipped record by record
//! ([`segment`]), so it costs only the records it touches.

mod cursor;
mod landmarks;
mod reader;
mod segment;

pub use cursor::Cursor;
pub use reader::Reader;
/// Where a segment starting at a sequence number lives (the fuzz target `queue_records` writes one).
pub use segment::segment_path;

use landmarks::{Landmark, Landmarks};
use segment::list_segments;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{mpsc, oneshot, watch};

const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// An append that was not stored (the writer's error, with the segment's path).
    #[error("{0}")]
    NotStored(String),
    #[error("the queue writer has stopped")]
    Closed,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> QueueError + '_ {
    move |source| QueueError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What is on disk: every record below `next_seq`, the last `len` bytes of them in the segment
/// whose first record is `segment`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Durable {
    pub next_seq: u64,
    pub segment: u64,
    pub len: u64,
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
    durable: watch::Receiver<Durable>,
    /// False from a failed append until an append (or a probe of the disk) succeeds.
    healthy: Arc<AtomicBool>,
    landmarks: Arc<Landmarks>,
}

impl Queue {
    /// Opens (or creates) the queue in `dir`, cutting a torn tail, and starts its writer thread.
    pub fn open(dir: &Path) -> Result<Queue, QueueError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let segments = list_segments(dir).map_err(io(dir))?;
        let (segment, durable) = match segments.last() {
            Some((first, path)) => {
                let (open, durable) = open_newest(path, *first)?;
                (Some(open), durable)
            }
            None => (
                None,
                Durable {
                    next_seq: 0,
                    segment: 0,
                    len: 0,
                },
            ),
        };
        let healthy = Arc::new(AtomicBool::new(true));
        let (durable_tx, durable_rx) = watch::channel(durable);
        let (appends, rx) = mpsc::channel(1024);
        let landmarks = Arc::new(Landmarks::default());
        let writer = Writer {
            dir: dir.to_path_buf(),
            segment,
            next_seq: durable.next_seq,
            durable: durable_tx,
            healthy: healthy.clone(),
            landmarks: landmarks.clone(),
            buf: Vec::new(),
            marks: Vec::new(),
        };
        std::thread::Builder::new()
            .name("hookline-queue-writer".into())
            .spawn(move || {
                // Its work is ingestion's: accepting, not delivering.
                crate::runtimes::yield_to_delivery();
                writer.run(rx)
            })
            .map_err(io(dir))?;
        Ok(Queue {
            dir: dir.to_path_buf(),
            appends,
            durable: durable_rx,
            healthy,
            landmarks,
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
            .map_err(QueueError::NotStored)
    }

    /// The sequence number the next record will get: everything below it is on disk.
    pub fn head(&self) -> u64 {
        self.durable.borrow().next_seq
    }

    /// A reader positioned at `from` (the first sequence number it will return).
    pub fn reader(&self, from: u64) -> Reader {
        Reader::new(
            self.dir.clone(),
            self.durable.clone(),
            self.landmarks.clone(),
            from,
        )
    }

    /// Whether an append can be stored now. After a failed append this writes (and removes) a
    /// small probe file, so readiness comes back by itself once the disk takes writes again.
    pub async fn can_store(&self) -> bool {
        if self.healthy.load(Ordering::Acquire) {
            return true;
        }
        let dir = self.dir.clone();
        let probed = tokio::task::spawn_blocking(move || probe(&dir)).await;
        let ok = matches!(probed, Ok(Ok(())));
        if ok {
            self.healthy.store(true, Ordering::Release);
        }
        ok
    }

    /// Deletes segments every record of which is below `min_cursor` (all destinations are past it).
    pub fn remove_consumed(&self, min_cursor: u64) -> Result<usize, QueueError> {
        let segments = list_segments(&self.dir).map_err(io(&self.dir))?;
        let mut removed = 0;
        for pair in segments.windows(2) {
            let (_, ref path) = pair[0];
            let (next_first, _) = pair[1];
            if next_first <= min_cursor {
                fs::remove_file(path).map_err(io(path))?;
                self.landmarks.forget_before(next_first);
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Room for this many bytes means the disk takes appends again.
const PROBE_BYTES: usize = 64 * 1024;

fn probe(dir: &Path) -> std::io::Result<()> {
    // A vanished data dir comes back here: nothing else would recreate it while unready.
    fs::create_dir_all(dir)?;
    let path = dir.join(".probe");
    let written = File::create(&path).and_then(|mut f| {
        f.write_all(&[0u8; PROBE_BYTES])?;
        f.sync_data()
    });
    let _ = fs::remove_file(&path);
    written
}

/// The newest segment after a restart: damage in the middle is kept (readers skip it), a torn
/// record at the very end is cut off.
fn open_newest(path: &Path, first: u64) -> Result<(OpenSegment, Durable), QueueError> {
    let scan = segment::scan(path, first).map_err(io(path))?;
    for (offset, bytes) in &scan.skipped {
        tracing::error!(segment = %path.display(), offset, bytes, "queue: skipping damaged records");
    }
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .open(path)
        .map_err(io(path))?;
    let actual = file.metadata().map_err(io(path))?.len();
    if actual != scan.valid_len {
        tracing::warn!(segment = %path.display(), offset = scan.valid_len, cut_bytes = actual - scan.valid_len, "queue: cutting off a torn record left by a crash");
        file.set_len(scan.valid_len).map_err(io(path))?;
        file.sync_all().map_err(io(path))?;
    }
    let open = OpenSegment::new(path.to_path_buf(), first, file, scan.valid_len)?;
    let durable = Durable {
        next_seq: scan.next_seq,
        segment: first,
        len: scan.valid_len,
    };
    Ok((open, durable))
}

struct OpenSegment {
    path: PathBuf,
    first_seq: u64,
    file: File,
    size: u64,
    /// `(device, inode)`: a segment whose path no longer leads to this file has vanished.
    identity: (u64, u64),
}

impl OpenSegment {
    fn new(path: PathBuf, first_seq: u64, file: File, size: u64) -> Result<Self, QueueError> {
        let meta = file.metadata().map_err(io(&path))?;
        Ok(OpenSegment {
            identity: (meta.dev(), meta.ino()),
            path,
            first_seq,
            file,
            size,
        })
    }

    fn still_in_place(&self) -> std::io::Result<()> {
        let meta = fs::metadata(&self.path)?;
        if (meta.dev(), meta.ino()) == self.identity {
            Ok(())
        } else {
            Err(std::io::Error::other("the segment file was replaced"))
        }
    }
}

struct Writer {
    dir: PathBuf,
    /// `None` after a failure (or before the first append): the next append opens a new segment.
    segment: Option<OpenSegment>,
    next_seq: u64,
    durable: watch::Sender<Durable>,
    healthy: Arc<AtomicBool>,
    landmarks: Arc<Landmarks>,
    buf: Vec<u8>,
    /// The landmarks in `buf`: sequence numbers and their offsets in it.
    marks: Vec<(u64, u64)>,
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
                tracing::error!(error = %e, "queue: append failed; nothing of it was acknowledged");
            }
            for append in group {
                let _ = append.done.send(result.clone());
            }
        }
    }

    fn write_group(&mut self, group: &[Append]) -> Result<(), QueueError> {
        self.buf.clear();
        self.marks.clear();
        let mut seq = self.next_seq;
        for payload in group.iter().flat_map(|a| &a.payloads) {
            if Landmarks::is_landmark(seq) {
                self.marks.push((seq, self.buf.len() as u64));
            }
            segment::encode(seq, payload, &mut self.buf);
            seq += 1;
        }
        self.ensure_writable_segment()?;
        let segment = self.segment.as_mut().expect("just ensured");
        let start_size = segment.size;
        let written = segment
            .still_in_place()
            .and_then(|()| segment.file.write_all(&self.buf))
            .and_then(|()| segment.file.sync_data());
        if let Err(e) = written {
            let error = io(&segment.path)(e);
            self.seal_after_failure(start_size);
            return Err(error);
        }
        for &(seq, offset) in &self.marks {
            let at = Landmark {
                segment: segment.first_seq,
                offset: start_size + offset,
            };
            self.landmarks.note(seq, at);
        }
        segment.size += self.buf.len() as u64;
        self.next_seq = seq;
        self.durable.send_replace(Durable {
            next_seq: seq,
            segment: segment.first_seq,
            len: segment.size,
        });
        self.healthy.store(true, Ordering::Release);
        Ok(())
    }

    /// Opens a new segment when there is none (after a failure) or the open one is full.
    fn ensure_writable_segment(&mut self) -> Result<(), QueueError> {
        if self
            .segment
            .as_ref()
            .is_some_and(|s| s.size < SEGMENT_BYTES)
        {
            return Ok(());
        }
        // A segment is only left behind fully synced, so no record is lost by moving on.
        self.segment = None;
        match self.create_segment() {
            Ok(segment) => {
                self.segment = Some(segment);
                Ok(())
            }
            Err(e) => {
                self.healthy.store(false, Ordering::Release);
                Err(e)
            }
        }
    }

    /// A new segment starting at the next sequence number. A file of that name can only hold
    /// what a failed append left (its first record was never acknowledged), so it is emptied.
    fn create_segment(&self) -> Result<OpenSegment, QueueError> {
        fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let path = segment_path(&self.dir, self.next_seq);
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .and_then(|f| f.set_len(0).map(|()| f))
            .map_err(io(&path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        OpenSegment::new(path, self.next_seq, file, 0)
    }

    /// After a failed write or sync: cut the unacknowledged bytes off (best effort) and stop
    /// using the file. Readers never read them either way: they stop at the durable length and
    /// at the next segment's first sequence number.
    fn seal_after_failure(&mut self, start_size: u64) {
        self.healthy.store(false, Ordering::Release);
        if let Some(segment) = self.segment.take() {
            let cut = segment
                .file
                .set_len(start_size)
                .and_then(|()| segment.file.sync_all());
            if let Err(e) = cut {
                tracing::warn!(segment = %segment.path.display(), offset = start_size, error = %e, "queue: cannot cut off a failed append; the segment is sealed and readers stop before it");
            }
        }
    }
}

#[cfg(test)]
mod tests;
