//! Which threads run what, in a process that both ingests and delivers.
//!
//! Delivery comes before ingestion when the CPU is short. An accepted event is already safe on
//! disk; accepting more while the ones accepted wait only grows the backlog. So ingestion (its
//! HTTP server, and the queue's writer thread) runs under Linux's `SCHED_IDLE` policy: a
//! delivery thread that wakes takes the core at once, and ingestion gets what delivery leaves.
//! It is not starved: the scheduler never leaves a core idle for priority's sake, so on a
//! machine with a spare core (or while delivery waits for its endpoint) ingestion runs at full
//! speed.
//!
//! Each destination delivers from a thread of its own. Its reader, senders and connections hand
//! every event to one another; on one thread those hand-offs are calls within one run queue
//! rather than wake-ups across cores. A destination's insert function, however long it
//! computes, holds up only that destination.

use std::io;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

/// The runtime ingestion is served from: as many threads as the process may use, each yielding
/// to delivery.
pub struct IngestionRuntime(Option<Runtime>);

impl IngestionRuntime {
    pub fn new() -> io::Result<IngestionRuntime> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("hookline-ingest")
            .on_thread_start(yield_to_delivery)
            .enable_all()
            .build()?;
        Ok(IngestionRuntime(Some(runtime)))
    }

    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("only taken on drop").handle()
    }
}

impl Drop for IngestionRuntime {
    /// Dropped from within the main runtime, where waiting for its threads is not allowed: by
    /// then the server is done, so nothing is left to wait for.
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Runs `future` (one destination's delivery) on a new thread named `name`, with a runtime of
/// its own; the receiver gets its output when it ends (an error if it panicked).
pub fn on_own_thread<F>(name: String, future: F) -> io::Result<oneshot::Receiver<F::Output>>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (done, finished) = oneshot::channel();
    std::thread::Builder::new().name(name).spawn(move || {
        let _ = done.send(runtime.block_on(future));
    })?;
    Ok(finished)
}

/// Puts the calling thread under `SCHED_IDLE` (Linux schedules each thread on its own, so the
/// rest of the process keeps its policy). `nice` 10 was tried first: a thread at `nice` 10 still
/// ran out its slice when a delivery thread woke, and delivery got 42–57 % of the endpoint's
/// rate while ingesting instead of 58–80 %. Moving to `SCHED_IDLE` needs no privilege; should it
/// fail anyway, ingestion just competes evenly.
pub fn yield_to_delivery() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid and sched_setscheduler take plain integers and a parameter block that
    // lives across the call.
    unsafe {
        let thread = libc::gettid();
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(thread, libc::SCHED_IDLE, &param) != 0 {
            tracing::debug!(error = %io::Error::last_os_error(), "could not make the ingestion thread yield to delivery");
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn ingestion_threads_yield_to_delivery_and_others_do_not() {
        // SAFETY: sched_getscheduler only reads.
        let policy = || unsafe { libc::sched_getscheduler(libc::gettid()) };
        let outside = policy();
        let runtime = IngestionRuntime::new().unwrap();
        let inside = runtime
            .handle()
            .block_on(async { tokio::spawn(async move { policy() }).await.unwrap() });
        assert_eq!(inside, libc::SCHED_IDLE);
        assert_ne!(outside, libc::SCHED_IDLE);
        assert_eq!(policy(), outside);
    }

    #[test]
    fn a_future_on_its_own_thread_runs_there_and_its_output_comes_back() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let caller = std::thread::current().id();
        let (thread, name) = runtime.block_on(async {
            on_own_thread("deliver-test".into(), async {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                let me = std::thread::current();
                (me.id(), me.name().map(String::from))
            })
            .unwrap()
            .await
            .unwrap()
        });
        assert_ne!(thread, caller);
        assert_eq!(name.as_deref(), Some("deliver-test"));
    }
}
