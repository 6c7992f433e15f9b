//! Blocking work (SQLite queries, NSS look-ups, `.drv` parsing, reading the
//! lower directory) run off tokio's async worker threads.
//!
//! Invariant: every call that may block the thread goes through [`run`], so
//! one slow query never stalls the connections sharing its worker thread.
//! The closure runs inside the caller's panic context (`crate::panics`), so a
//! panic there is logged with the op and the client's pid like any other.

/// Run `f` on tokio's blocking pool and wait for its result. A panic in `f`
/// is re-raised in the caller (after the panic hook has logged it).
pub(crate) async fn run<T, F>(f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let ctx = crate::panics::current();
    match tokio::task::spawn_blocking(move || crate::panics::in_blocking(ctx, f)).await {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("blocking task cancelled: {e}"),
    }
}
