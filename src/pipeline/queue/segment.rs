//! Segment files and the records in them.
//!
//! A segment is named after the sequence number of its first record (`00000000000000000042.log`).
//! Record: `[u32 len][u32 crc32(seq ‖ payload)][u64 seq][payload]`, little-endian.
//!
//! Damage costs only what it touches: a record whose framing or checksum is bad is skipped and
//! reading resynchronises on the next offset that holds a valid record with a plausible sequence
//! number. Payloads are JSON, which never holds a byte below 0x20, so a record header cannot be
//! forged inside one: its length's high byte would make it larger than [`MAX_RECORD`].

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub const HEADER: usize = 16;
/// A record larger than this is damage, not data (ingestion caps requests far below it).
pub const MAX_RECORD: usize = 16 * 1024 * 1024;
const READ_AHEAD: usize = 64 * 1024;

pub fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.log"))
}

/// The segments in `dir`, oldest first, as `(first sequence number, path)`.
pub fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
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

pub fn encode(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&seq.to_le_bytes());
    crc.update(payload);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
}

/// What lies at an offset of a segment.
#[derive(Debug, PartialEq)]
pub enum Found {
    Record {
        seq: u64,
        payload: Vec<u8>,
        /// The offset just after it.
        end: u64,
    },
    /// Bad framing or checksum, or a sequence number outside the range the caller expects.
    Damaged,
    /// Fewer bytes than a whole record before the limit: the end of what was written.
    End,
}

/// The sequence numbers a record at some offset may have: `[min, max)`.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    pub min: u64,
    pub max: u64,
}

/// Positional reads of one segment with a read-ahead window; never reads at or past `limit`.
pub struct SegmentFile {
    pub path: PathBuf,
    pub first_seq: u64,
    file: File,
    window: Vec<u8>,
    window_start: u64,
}

impl SegmentFile {
    pub fn open(path: &Path, first_seq: u64) -> io::Result<SegmentFile> {
        Ok(SegmentFile {
            path: path.to_path_buf(),
            first_seq,
            file: File::open(path)?,
            window: Vec::new(),
            window_start: 0,
        })
    }

    pub fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// `len` bytes at `at`, all below `limit`; `None` when they reach past it (or the file).
    fn bytes(&mut self, at: u64, len: usize, limit: u64) -> io::Result<Option<&[u8]>> {
        if at + len as u64 > limit {
            return Ok(None);
        }
        let window_end = self.window_start + self.window.len() as u64;
        if at < self.window_start || at + len as u64 > window_end {
            let want = len.max(READ_AHEAD).min((limit - at) as usize);
            self.window.resize(want, 0);
            let mut filled = 0;
            while filled < want {
                match self
                    .file
                    .read_at(&mut self.window[filled..], at + filled as u64)
                {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            self.window.truncate(filled);
            self.window_start = at;
            if filled < len {
                return Ok(None);
            }
        }
        let from = (at - self.window_start) as usize;
        Ok(Some(&self.window[from..from + len]))
    }

    /// The record at `at`, if a valid one with a sequence number in `expect` is there.
    pub fn record_at(&mut self, at: u64, limit: u64, expect: Expect) -> io::Result<Found> {
        let Some(header) = self.bytes(at, HEADER, limit)? else {
            return Ok(Found::End);
        };
        let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let seq = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        if len > MAX_RECORD || seq < expect.min || seq >= expect.max {
            return Ok(Found::Damaged);
        }
        let Some(record) = self.bytes(at, HEADER + len, limit)? else {
            return Ok(Found::End);
        };
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&record[8..]);
        if hasher.finalize() != crc {
            return Ok(Found::Damaged);
        }
        Ok(Found::Record {
            seq,
            payload: record[HEADER..].to_vec(),
            end: at + (HEADER + len) as u64,
        })
    }

    /// The first offset after `from` that holds a valid record (resynchronising after damage).
    pub fn resync(&mut self, from: u64, limit: u64, expect: Expect) -> io::Result<Option<u64>> {
        for at in from + 1..limit.saturating_sub(HEADER as u64 - 1) {
            if let Found::Record { .. } = self.record_at(at, limit, expect)? {
                return Ok(Some(at));
            }
        }
        Ok(None)
    }
}

/// What opening the newest segment found.
#[derive(Debug, PartialEq)]
pub struct Scan {
    /// The sequence number after the last valid record.
    pub next_seq: u64,
    /// The offset after the last valid record: anything beyond is a torn tail.
    pub valid_len: u64,
    /// Damaged stretches skipped before valid records, as `(offset, bytes)`.
    pub skipped: Vec<(u64, u64)>,
}

/// Reads a whole segment, skipping damage in the middle; the damage after the last valid record
/// is the torn tail of a crash.
pub fn scan(path: &Path, first_seq: u64) -> io::Result<Scan> {
    let mut file = SegmentFile::open(path, first_seq)?;
    let limit = file.len()?;
    let mut scan = Scan {
        next_seq: first_seq,
        valid_len: 0,
        skipped: Vec::new(),
    };
    let mut at = 0;
    loop {
        let expect = Expect {
            min: scan.next_seq,
            max: scan.next_seq.saturating_add(1 << 32),
        };
        match file.record_at(at, limit, expect)? {
            Found::Record { seq, end, .. } => {
                scan.next_seq = seq + 1;
                scan.valid_len = end;
                at = end;
            }
            Found::End => return Ok(scan),
            Found::Damaged => match file.resync(at, limit, expect)? {
                Some(next) => {
                    scan.skipped.push((at, next - at));
                    at = next;
                }
                None => return Ok(scan),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(dir: &Path, records: &[(u64, &[u8])]) -> (PathBuf, Vec<u64>) {
        let mut bytes = Vec::new();
        let mut offsets = Vec::new();
        for (seq, payload) in records {
            offsets.push(bytes.len() as u64);
            encode(*seq, payload, &mut bytes);
        }
        let path = segment_path(dir, records[0].0);
        fs::write(&path, &bytes).unwrap();
        (path, offsets)
    }

    fn damage(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
        let mut bytes = fs::read(path).unwrap();
        f(&mut bytes);
        fs::write(path, bytes).unwrap();
    }

    const EVENTS: [(u64, &[u8]); 4] = [
        (10, br#"{"event":"a"}"#),
        (11, br#"{"event":"bb"}"#),
        (12, br#"{"event":"ccc"}"#),
        (13, br#"{"event":"dddd"}"#),
    ];

    #[test]
    fn a_flipped_byte_costs_only_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let (path, offsets) = segment(dir.path(), &EVENTS);
        damage(&path, |b| b[offsets[1] as usize + HEADER + 3] ^= 0x40);
        let s = scan(&path, 10).unwrap();
        assert_eq!(s.next_seq, 14);
        assert_eq!(s.skipped, vec![(offsets[1], offsets[2] - offsets[1])]);
        assert_eq!(s.valid_len, fs::metadata(&path).unwrap().len());
    }

    #[test]
    fn damaged_headers_and_zeroed_blocks_are_skipped() {
        for hit in [0usize, 4, 8, 12] {
            let dir = tempfile::tempdir().unwrap();
            let (path, offsets) = segment(dir.path(), &EVENTS);
            // A header field (length, checksum, sequence number) of the second record.
            damage(&path, |b| b[offsets[1] as usize + hit] ^= 0x01);
            assert_eq!(scan(&path, 10).unwrap().next_seq, 14, "hit at {hit}");
        }
        let dir = tempfile::tempdir().unwrap();
        let (path, offsets) = segment(dir.path(), &EVENTS);
        // Zeros from the middle of the first record into the third.
        damage(&path, |b| b[5..offsets[2] as usize + 3].fill(0));
        let s = scan(&path, 10).unwrap();
        assert_eq!(s.next_seq, 14);
        assert_eq!(s.skipped, vec![(0, offsets[3])]);
    }

    #[test]
    fn only_damage_at_the_very_end_is_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (path, offsets) = segment(dir.path(), &EVENTS);
        damage(&path, |b| {
            b.truncate(offsets[3] as usize + 7);
        });
        let s = scan(&path, 10).unwrap();
        assert_eq!((s.next_seq, s.valid_len), (13, offsets[3]));
        assert!(s.skipped.is_empty());
        damage(&path, |b| b.extend_from_slice(&[0xff; 40]));
        assert_eq!(scan(&path, 10).unwrap().valid_len, offsets[3]);
    }

    #[test]
    fn a_truncated_record_in_the_middle_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (path, offsets) = segment(dir.path(), &EVENTS);
        // The second record loses its last bytes; the third follows at once.
        damage(&path, |b| {
            b.drain(offsets[2] as usize - 4..offsets[2] as usize);
        });
        let s = scan(&path, 10).unwrap();
        assert_eq!(s.next_seq, 14);
        assert_eq!(s.skipped.len(), 1);
    }

    #[test]
    fn records_out_of_the_expected_range_are_damage() {
        let dir = tempfile::tempdir().unwrap();
        let (path, offsets) = segment(dir.path(), &EVENTS);
        let mut f = SegmentFile::open(&path, 10).unwrap();
        let limit = f.len().unwrap();
        assert_eq!(
            f.record_at(offsets[1], limit, Expect { min: 12, max: 20 })
                .unwrap(),
            Found::Damaged
        );
        assert_eq!(
            f.record_at(offsets[1], limit, Expect { min: 0, max: 11 })
                .unwrap(),
            Found::Damaged
        );
        assert!(matches!(
            f.record_at(offsets[1], offsets[2] - 1, Expect { min: 0, max: 20 })
                .unwrap(),
            Found::End
        ));
    }
}
