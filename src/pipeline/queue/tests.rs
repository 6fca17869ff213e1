//! The queue through its public surface: appends, readers, restarts and disk faults.

use super::*;
use segment::HEADER;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

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

fn write_segment(dir: &Path, records: &[(u64, &[u8])]) -> (PathBuf, Vec<u64>) {
    let mut bytes = Vec::new();
    let mut offsets = Vec::new();
    for (seq, payload) in records {
        offsets.push(bytes.len() as u64);
        segment::encode(*seq, payload, &mut bytes);
    }
    let path = segment_path(dir, records[0].0);
    fs::write(&path, &bytes).unwrap();
    (path, offsets)
}

async fn read_all(q: &Queue, from: u64) -> Vec<(u64, Vec<u8>)> {
    let mut r = q.reader(from);
    let mut out = Vec::new();
    while out
        .last()
        .is_none_or(|(seq, _): &(u64, Vec<u8>)| *seq + 1 < q.head())
    {
        out.push(r.next().await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_flipped_byte_costs_only_its_record_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let q = Queue::open(dir.path()).unwrap();
        for n in 0..5 {
            q.append(vec![format!("{{\"n\":{n}}}").into_bytes()])
                .await
                .unwrap();
        }
    }
    let seg = segment_path(dir.path(), 0);
    let mut bytes = fs::read(&seg).unwrap();
    let record = HEADER + 7;
    bytes[2 * record + HEADER + 3] ^= 0x20;
    fs::write(&seg, bytes).unwrap();
    let q = Queue::open(dir.path()).unwrap();
    assert_eq!(q.head(), 5, "records after the damage are kept");
    q.append(vec![b"{\"n\":5}".to_vec()]).await.unwrap();
    let seqs: Vec<u64> = read_all(&q, 0).await.into_iter().map(|r| r.0).collect();
    assert_eq!(seqs, [0, 1, 3, 4, 5]);
}

#[tokio::test]
async fn a_truncated_or_zeroed_segment_in_the_middle_loses_only_what_it_held() {
    let dir = tempfile::tempdir().unwrap();
    let (first, offsets) = write_segment(
        dir.path(),
        &[(0, b"{\"a\":0}"), (1, b"{\"a\":1}"), (2, b"{\"a\":2}")],
    );
    write_segment(dir.path(), &[(3, b"{\"a\":3}"), (4, b"{\"a\":4}")]);
    let (_, later) = write_segment(
        dir.path(),
        &[(5, b"{\"a\":5}"), (6, b"{\"a\":6}"), (7, b"{\"a\":7}")],
    );
    // The first segment ends in the middle of its second record.
    let bytes = fs::read(&first).unwrap();
    fs::write(&first, &bytes[..offsets[1] as usize + 9]).unwrap();
    // The last one has a zeroed block over its middle record.
    let last = segment_path(dir.path(), 5);
    let mut bytes = fs::read(&last).unwrap();
    bytes[later[1] as usize..later[2] as usize].fill(0);
    fs::write(&last, bytes).unwrap();

    let q = Queue::open(dir.path()).unwrap();
    assert_eq!(q.head(), 8);
    let seqs: Vec<u64> = read_all(&q, 0).await.into_iter().map(|r| r.0).collect();
    assert_eq!(seqs, [0, 3, 4, 5, 7]);
}

#[tokio::test]
async fn what_a_failed_append_left_in_a_sealed_segment_is_never_read() {
    let dir = tempfile::tempdir().unwrap();
    // Segment 0 holds 0 and 1, then a whole record 2 that was never acknowledged (its sync
    // failed); the writer went on in segment 2, where the real record 2 is.
    write_segment(
        dir.path(),
        &[
            (0, b"{\"ok\":0}"),
            (1, b"{\"ok\":1}"),
            (2, b"{\"failed\":2}"),
        ],
    );
    write_segment(dir.path(), &[(2, b"{\"ok\":2}"), (3, b"{\"ok\":3}")]);
    let q = Queue::open(dir.path()).unwrap();
    let payloads: Vec<Vec<u8>> = read_all(&q, 0).await.into_iter().map(|r| r.1).collect();
    assert_eq!(
        payloads,
        [
            &b"{\"ok\":0}"[..],
            b"{\"ok\":1}",
            b"{\"ok\":2}",
            b"{\"ok\":3}"
        ]
    );
}

#[tokio::test]
async fn bytes_past_the_durable_end_are_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path()).unwrap();
    q.append(vec![b"{\"ok\":0}".to_vec()]).await.unwrap();
    // A record 1 that is in the file but was never acknowledged.
    let mut stray = Vec::new();
    segment::encode(1, b"{\"stray\":1}", &mut stray);
    OpenOptions::new()
        .append(true)
        .open(segment_path(dir.path(), 0))
        .unwrap()
        .write_all(&stray)
        .unwrap();
    let mut r = q.reader(0);
    assert_eq!(r.next().await.unwrap().0, 0);
    use futures::FutureExt;
    assert!(
        r.next().now_or_never().is_none(),
        "read a record that is not durable"
    );
}

#[tokio::test]
async fn a_vanished_data_dir_refuses_appends_then_comes_back_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let queue_dir = dir.path().join("queue");
    let q = Queue::open(&queue_dir).unwrap();
    q.append(vec![b"{\"n\":0}".to_vec()]).await.unwrap();
    fs::remove_dir_all(&queue_dir).unwrap();
    assert!(
        q.append(vec![b"{\"n\":1}".to_vec()]).await.is_err(),
        "stored into a deleted file"
    );
    assert!(q.can_store().await, "the probe brings the dir back");
    q.append(vec![b"{\"n\":2}".to_vec()]).await.unwrap();
    let mut r = q.reader(1);
    assert_eq!(r.next().await.unwrap(), (1, b"{\"n\":2}".to_vec()));
}

#[tokio::test]
async fn a_log_whose_durable_records_cannot_be_read_does_not_spin_the_reader() {
    // Found by fuzzing (fuzz/seeds/queue_records/reader-spin): records counted as durable on
    // open that the reader cannot find made it loop forever without yielding.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        segment_path(dir.path(), 0),
        include_bytes!("../../../fuzz/seeds/queue_records/reader-spin"),
    )
    .unwrap();
    let q = Queue::open(dir.path()).unwrap();
    let head = q.head();
    let mut r = q.reader(0);
    q.append(vec![b"after".to_vec()]).await.unwrap();
    // Whatever could not be read is skipped; the next append is read.
    let found = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            let (seq, payload) = r.next().await.unwrap();
            if seq >= head {
                return (seq, payload);
            }
        }
    })
    .await
    .expect("the reader moved on");
    assert_eq!(found, (head, b"after".to_vec()));
}

#[tokio::test]
async fn readers_opened_deep_in_a_segment_start_at_a_landmark_and_read_the_right_records() {
    let dir = tempfile::tempdir().unwrap();
    let every = landmarks::EVERY;
    let payload = |seq: u64| format!("event-{seq}").into_bytes();
    let total = 3 * every + 10;
    {
        let q = Queue::open(dir.path()).unwrap();
        for group in (0..total).collect::<Vec<_>>().chunks(700) {
            q.append(group.iter().map(|&s| payload(s)).collect())
                .await
                .unwrap();
        }
        let (from, offset) = q.landmarks.before(0, 2 * every + 5).unwrap();
        assert_eq!(from, 2 * every);
        assert!(offset > 0);
        for from in [0, every - 1, every, 2 * every + 5, total - 1] {
            assert_eq!(q.reader(from).next().await.unwrap(), (from, payload(from)));
        }
    }
    // After a restart nothing is known until a reader walks past it.
    let q = Queue::open(dir.path()).unwrap();
    assert_eq!(q.landmarks.before(0, 2 * every + 5), None);
    let deep = 2 * every + 5;
    assert_eq!(q.reader(deep).next().await.unwrap(), (deep, payload(deep)));
    assert_eq!(q.landmarks.before(0, deep).map(|(s, _)| s), Some(2 * every));
    assert_eq!(
        q.reader(deep + 1).next().await.unwrap(),
        (deep + 1, payload(deep + 1))
    );
}
