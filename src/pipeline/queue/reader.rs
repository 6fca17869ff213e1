//! Following the log from a position: records are returned once durable, in sequence order;
//! damaged ones are skipped (the caller sees the gap in sequence numbers).

use super::landmarks::{Landmark, Landmarks};
use super::segment::{Expect, Found, SegmentFile, list_segments};
use super::{Durable, QueueError, io};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

/// What one look at the log found.
enum Step {
    Record((u64, Vec<u8>)),
    /// Nothing (more) readable below the durable end.
    Nothing,
    /// Not done looking.
    Again,
}

pub struct Reader {
    dir: PathBuf,
    durable: watch::Receiver<Durable>,
    landmarks: Arc<Landmarks>,
    next: u64,
    at: Option<Position>,
}

struct Position {
    file: SegmentFile,
    offset: u64,
    /// Once this segment is sealed: its length, and the next segment's first sequence number
    /// (no record here can have it or a later one: what is beyond was never acknowledged).
    sealed: Option<Sealed>,
}

#[derive(Clone, Copy)]
struct Sealed {
    len: u64,
    before: u64,
}

impl Reader {
    pub(super) fn new(
        dir: PathBuf,
        durable: watch::Receiver<Durable>,
        landmarks: Arc<Landmarks>,
        from: u64,
    ) -> Reader {
        Reader {
            dir,
            durable,
            landmarks,
            next: from,
            at: None,
        }
    }

    /// The next record at or after the reader's position, waiting until one is durable.
    pub async fn next(&mut self) -> Result<(u64, Vec<u8>), QueueError> {
        loop {
            let durable = *self.durable.borrow_and_update();
            if self.next < durable.next_seq {
                match self.read_durable(durable)? {
                    Step::Record(record) => return Ok(record),
                    Step::Again => {
                        tokio::task::yield_now().await;
                        continue;
                    }
                    Step::Nothing if self.next < durable.next_seq => {
                        // Durable, yet nowhere to be read (a damaged log): lost. Without this
                        // the reader would spin on them forever (found by fuzzing).
                        tracing::error!(
                            from = self.next,
                            to = durable.next_seq,
                            "queue: records missing before the durable end; skipping them"
                        );
                        self.next = durable.next_seq;
                    }
                    Step::Nothing => {}
                }
            }
            if self.next >= self.durable.borrow().next_seq && self.durable.changed().await.is_err()
            {
                return Err(QueueError::Closed);
            }
        }
    }

    /// The record at `self.next` or the first valid one after it, reading only what `durable`
    /// says is on disk.
    fn read_durable(&mut self, durable: Durable) -> Result<Step, QueueError> {
        // Each round either returns or moves to a later segment.
        for _ in 0..64 {
            if self.at.is_none() && !self.open_segment_of(self.next)? {
                return Ok(Step::Nothing);
            }
            let pos = self.at.as_mut().expect("just opened");
            let writing = pos.file.first_seq == durable.segment;
            if !writing && pos.sealed.is_none() {
                pos.sealed = Some(Sealed {
                    len: pos.file.len().map_err(io(&pos.file.path))?,
                    before: next_segment_after(&self.dir, pos.file.first_seq)?,
                });
            }
            let (limit, max) = match pos.sealed {
                Some(sealed) if !writing => (sealed.len, sealed.before),
                _ => (durable.len, durable.next_seq),
            };
            let expect = Expect {
                min: self.next,
                max,
            };
            let found = match pos
                .file
                .record_at(pos.offset, limit, expect)
                .map_err(io(&pos.file.path))?
            {
                // Below `limit` every record is whole: one that claims to run past it is damage,
                // not a record still being written (found by fuzzing).
                Found::End if pos.offset < limit => Found::Damaged,
                found => found,
            };
            match found {
                Found::Record { seq, payload, end } => {
                    pos.offset = end;
                    self.next = seq + 1;
                    return Ok(Step::Record((seq, payload)));
                }
                Found::Damaged => {
                    let resynced = pos
                        .file
                        .resync(pos.offset, limit, expect)
                        .map_err(io(&pos.file.path))?;
                    let to = resynced.unwrap_or(limit);
                    tracing::error!(segment = %pos.file.path.display(), offset = pos.offset, bytes = to - pos.offset, "queue: skipping damaged records");
                    pos.offset = to;
                    if resynced.is_none() && writing {
                        // Damage up to the durable end: what it held is lost.
                        self.next = durable.next_seq;
                        return Ok(Step::Nothing);
                    }
                }
                Found::End if writing => return Ok(Step::Nothing),
                Found::End => {
                    // The end of a sealed segment: continue in the next one.
                    let next_first = pos.sealed.expect("set for sealed segments").before;
                    if self.next < next_first {
                        tracing::error!(segment = %pos.file.path.display(), from = self.next, to = next_first, "queue: records missing at the end of a segment; skipping them");
                        self.next = next_first;
                    }
                    self.at = None;
                }
            }
        }
        // Many segments passed: let other tasks run before going on.
        Ok(Step::Again)
    }

    /// Opens the segment holding `seq` (or, when removed or lost, the first one after it) and
    /// positions at `seq`; `false` when there is no segment yet.
    fn open_segment_of(&mut self, seq: u64) -> Result<bool, QueueError> {
        let segments = list_segments(&self.dir).map_err(io(&self.dir))?;
        let Some((first, path)) = segments
            .iter()
            .rev()
            .find(|(first, _)| *first <= seq)
            .or_else(|| segments.first())
            .cloned()
        else {
            return Ok(false);
        };
        if first > seq {
            tracing::error!(
                from = seq,
                to = first,
                "queue: records missing; continuing at the oldest segment"
            );
            self.next = first;
        }
        let mut file = SegmentFile::open(&path, first).map_err(io(&path))?;
        // Skip records before `next`, walking from the nearest landmark, noting those passed.
        let limit = file.len().map_err(io(&path))?;
        let (from, mut offset) = self
            .landmarks
            .before(first, self.next)
            .unwrap_or((first, 0));
        let expect = Expect {
            min: from,
            max: self.next,
        };
        while let Found::Record { seq, end, .. } =
            file.record_at(offset, limit, expect).map_err(io(&path))?
        {
            if Landmarks::is_landmark(seq) {
                let at = Landmark {
                    segment: first,
                    offset,
                };
                self.landmarks.note(seq, at);
            }
            offset = end;
        }
        self.at = Some(Position {
            file,
            offset,
            sealed: None,
        });
        Ok(true)
    }
}

/// The first sequence number of the segment after the one starting at `first`.
fn next_segment_after(dir: &std::path::Path, first: u64) -> Result<u64, QueueError> {
    let segments = list_segments(dir).map_err(io(dir))?;
    Ok(segments
        .iter()
        .map(|(f, _)| *f)
        .find(|f| *f > first)
        .unwrap_or(u64::MAX))
}
