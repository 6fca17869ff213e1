//! The queue's record decoding: any bytes in a segment file (a torn or corrupted log after a
//! crash) are recovered from on open and read past, never a crash or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|segment: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let queue_dir = dir.path().join("queue");
    std::fs::create_dir_all(&queue_dir).unwrap();
    std::fs::write(hookline::pipeline::queue::segment_path(&queue_dir, 0), segment).unwrap();
    let Ok(queue) = hookline::pipeline::queue::Queue::open(&queue_dir) else {
        return;
    };
    let head = queue.head();
    if head == 0 {
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut reader = queue.reader(0);
        while let Ok(Ok((seq, _))) =
            tokio::time::timeout(std::time::Duration::from_secs(1), reader.next()).await
        {
            if seq + 1 >= head {
                break;
            }
        }
    });
});
