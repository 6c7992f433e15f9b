//! Blocking work (SQLite queries, NSS look-ups, `.drv` parsing, reading the
//! lower directory) run off tokio's async worker threads.
//!
//! Invariant: every call whose cost grows with the store or with the request
//! (scans, long lists, VerifyStore, NSS look-ups, `.drv` reads) goes through
//! [`run`], so one slow call never stalls the connections sharing its worker
//! thread. Point lookups of a few microseconds stay inline (see `backend`).
//! The closure runs inside the caller's panic context (`crate::panics`), so a
//! panic there is logged with the op and the client's pid like any other.
//!
//! How: on the multi-thread runtime (the daemon's), `block_in_place`: the
//! worker thread hands its queue of tasks to another thread and runs `f`
//! itself, so it is no longer an async thread while `f` blocks. That hop is
//! far cheaper than `spawn_blocking` (whose waiting task parks its worker
//! and the blocking thread has to wake it), but still costs more than an
//! index point lookup, which is why those do not use it
//! (`bench/benches/blocking.rs`; the figures: docs/src/performance.md, "Figures behind design choices").
//! Elsewhere (the current-thread runtime of tests with a paused clock, where
//! `block_in_place` is not allowed), `spawn_blocking`.
//!
//! What `block_in_place` implies for callers: other futures of the *same*
//! task (a `select!` or `timeout` around the call) are not polled until `f`
//! returns, as with any synchronous call; other tasks are unaffected. No
//! caller puts a timer around [`run`]. Not for use inside a `LocalSet`.

use tokio::runtime::{Handle, RuntimeFlavor};

/// Run `f` off the async threads and return its result. A panic in `f` is
/// re-raised in the caller (after the panic hook has logged it).
pub async fn run<T, F>(f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let ctx = crate::panics::current();
    if on_multi_thread_runtime() {
        return tokio::task::block_in_place(|| crate::panics::in_blocking(ctx, f));
    }
    match tokio::task::spawn_blocking(move || crate::panics::in_blocking(ctx, f)).await {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("blocking task cancelled: {e}"),
    }
}

fn on_multi_thread_runtime() -> bool {
    Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread)
}

#[cfg(test)]
mod tests {
    use super::run;

    /// On the multi-thread runtime the work runs in place, and the worker's
    /// other tasks keep running meanwhile (they were handed to another thread).
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn multi_thread_runs_in_place_without_stalling_other_tasks() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let other = tokio::spawn(async move { tx.send(()).unwrap() });
        // Blocks until the other task has run: with one worker thread, that
        // only happens if this thread stopped being its async thread.
        run(move || rx.recv_timeout(std::time::Duration::from_secs(60)).unwrap()).await;
        other.await.unwrap();
    }

    /// On the current-thread runtime the work goes to the blocking pool.
    #[tokio::test(flavor = "current_thread")]
    async fn current_thread_uses_the_blocking_pool() {
        let here = std::thread::current().id();
        let there = run(|| std::thread::current().id()).await;
        assert_ne!(here, there);
    }

    /// A panic in the work reaches the caller, on both runtimes.
    #[test]
    fn panics_are_re_raised() {
        for multi in [false, true] {
            let rt = if multi {
                tokio::runtime::Builder::new_multi_thread().build().unwrap()
            } else {
                tokio::runtime::Builder::new_current_thread().build().unwrap()
            };
            let r = rt.block_on(async { tokio::spawn(run(|| panic!("boom"))).await });
            assert!(r.unwrap_err().is_panic(), "multi-thread: {multi}");
        }
    }
}
