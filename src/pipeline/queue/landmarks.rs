//! Where some records start, so that a reader opened at a sequence number deep in a segment
//! starts near it instead of walking the segment from its first record. A destination opens
//! such a reader every second, for the age of its oldest waiting event: walking a 64 MiB
//! segment (hundreds of thousands of records) each time stalled its delivery by tens of ms.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// One landmark per this many sequence numbers: a reader walks at most this many records.
pub const EVERY: u64 = 1024;

/// Where the record with a landmark's sequence number starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Landmark {
    /// The first sequence number of its segment.
    pub segment: u64,
    pub offset: u64,
}

/// Sequence number → where its record starts, for every [`EVERY`]th one. Filled by the writer
/// as it appends and by readers as they walk (segments written before a restart); emptied as
/// segments are removed.
#[derive(Default)]
pub struct Landmarks(Mutex<BTreeMap<u64, Landmark>>);

impl Landmarks {
    pub fn is_landmark(seq: u64) -> bool {
        seq.is_multiple_of(EVERY)
    }

    pub fn note(&self, seq: u64, at: Landmark) {
        self.0.lock().expect("landmarks lock").insert(seq, at);
    }

    /// The nearest landmark at or before `seq` in the segment starting at `segment`.
    pub fn before(&self, segment: u64, seq: u64) -> Option<(u64, u64)> {
        let marks = self.0.lock().expect("landmarks lock");
        let (&at_seq, mark) = marks.range(segment..=seq).next_back()?;
        (mark.segment == segment).then_some((at_seq, mark.offset))
    }

    /// Forgets the landmarks of records below `seq` (their segments are gone).
    pub fn forget_before(&self, seq: u64) {
        let mut marks = self.0.lock().expect("landmarks lock");
        *marks = marks.split_off(&seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_landmark_of_the_same_segment_is_found() {
        let marks = Landmarks::default();
        for (seq, segment, offset) in [
            (0, 0, 0),
            (1024, 0, 900),
            (2048, 2000, 40),
            (3072, 2000, 950),
        ] {
            marks.note(seq, Landmark { segment, offset });
        }
        assert_eq!(marks.before(0, 1500), Some((1024, 900)));
        assert_eq!(marks.before(0, 1024), Some((1024, 900)));
        assert_eq!(marks.before(0, 1023), Some((0, 0)));
        assert_eq!(marks.before(2000, 3000), Some((2048, 40)));
        // Between a segment's first record and its first landmark: none of that segment.
        assert_eq!(marks.before(2000, 2047), None);
        assert_eq!(marks.before(5000, 9000), None);
        marks.forget_before(2000);
        assert_eq!(marks.before(0, 1500), None);
        assert_eq!(marks.before(2000, 3100), Some((3072, 950)));
    }

    #[test]
    fn every_so_many_sequence_numbers_is_a_landmark() {
        assert!(Landmarks::is_landmark(0));
        assert!(Landmarks::is_landmark(EVERY * 3));
        assert!(!Landmarks::is_landmark(EVERY + 1));
    }
}
