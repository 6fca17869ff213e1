//! Which threads run what, in a process that both ingests and delivers.
//!
//! Delivery comes before ingestion when the CPU is short. An accepted event is already safe on
//! disk; accepting more while the ones accepted wait only grows the backlog. So ingestion is
//! served from its own runtime, whose threads run at a lower scheduling priority (a higher
//! `nice`): while delivery has work it gets most of the CPU, and when it has none ingestion gets
//! all of it (the scheduler never leaves a core idle for priority's sake).
//!
//! Each destination delivers from a thread of its own. Its reader, senders and connections hand
//! every event to one another; on one thread those hand-offs are calls within one run queue
//! rather than wake-ups across cores. A destination's insert function, however long it
//! computes, holds up only that destination.

use std::io;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

/// How much lower: `nice` 10 weighs about a tenth of `nice` 0 in Linux's scheduler, enough for
/// delivery to keep pace without leaving ingestion (or its `/readyz`) waiting noticeably.
const INGESTION_NICENESS: i32 = 10;

/// The runtime ingestion is served from: as many threads as the process may use, each at the
/// lower priority.
pub struct IngestionRuntime(Option<Runtime>);

impl IngestionRuntime {
    pub fn new() -> io::Result<IngestionRuntime> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("hookline-ingest")
            .on_thread_start(lower_this_thread)
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

/// Raises the calling thread's niceness (Linux schedules each thread on its own, so the rest of
/// the process keeps its priority). Lowering one's own priority needs no privilege; should it
/// fail anyway, ingestion just competes evenly, as before.
fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid and setpriority take plain integers and touch no memory of ours.
    unsafe {
        let thread = libc::gettid() as libc::id_t;
        if libc::setpriority(libc::PRIO_PROCESS, thread, INGESTION_NICENESS) != 0 {
            tracing::debug!(error = %io::Error::last_os_error(), "could not lower the ingestion thread's priority");
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn ingestion_threads_run_at_the_lower_priority_and_others_do_not() {
        let nice = || {
            // SAFETY: as above; getpriority only reads.
            unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
        };
        let outside = nice();
        let runtime = IngestionRuntime::new().unwrap();
        let inside = runtime
            .handle()
            .block_on(async { tokio::spawn(async move { nice() }).await.unwrap() });
        assert_eq!(inside, (outside + INGESTION_NICENESS).min(19));
        assert_eq!(nice(), outside);
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
