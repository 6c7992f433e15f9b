//! Panics are defects you can see: a hook that logs each panic as ONE line at
//! error level, naming the op being served and the client's pid, and a
//! process-wide count that the sd-notify STATUS line shows.
//!
//! The context comes from where the panic happens: the connection loop runs
//! each connection inside `scope` (a tokio task-local, so it follows the
//! task across worker threads) and sets the op before answering each
//! request; blocking work that serves a request (the NAR writer) runs inside
//! `in_blocking`, a thread-local. Outside both, the line says so.
//!
//! Invariant: every line the hook writes starts with `PANIC_MARKER`, a string
//! nothing else prints, so a test harness can fail a run by searching the
//! daemon's log for it.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// Starts every panic line; the e2e suite and the load test search logs for it.
pub const PANIC_MARKER: &str = "SNIX-LOWER-STORE-PANIC";

static PANICS: AtomicU64 = AtomicU64::new(0);

/// What the daemon was doing: the op being served and who asked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Context {
    pub op: Option<&'static str>,
    pub(crate) peer_pid: Option<i32>,
}

tokio::task_local! {
    static TASK: Cell<Context>;
}

thread_local! {
    static THREAD: Cell<Option<Context>> = const { Cell::new(None) };
}

/// Run a connection's future with `ctx` as its panic context.
pub(crate) async fn scope<F: std::future::Future>(ctx: Context, f: F) -> F::Output {
    TASK.scope(Cell::new(ctx), f).await
}

/// Set the op of the current connection (inside `scope`; a no-op outside).
pub(crate) fn set_op(op: Option<&'static str>) {
    let _ = TASK.try_with(|c| c.set(Context { op, ..c.get() }));
}

/// The current connection's context (inside `scope`), e.g. to pass to `in_blocking`.
pub fn current() -> Option<Context> {
    TASK.try_with(Cell::get).ok().or_else(|| THREAD.with(Cell::get))
}

/// Run blocking work serving a request with `ctx` as its panic context.
/// Restored when `f` returns or unwinds, so a pooled thread keeps no stale context.
pub(crate) fn in_blocking<T>(ctx: Option<Context>, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<Context>);
    impl Drop for Restore {
        fn drop(&mut self) {
            THREAD.with(|t| t.set(self.0));
        }
    }
    let _restore = Restore(THREAD.with(|t| t.replace(ctx)));
    f()
}

/// Panics since the process started.
pub fn count() -> u64 {
    PANICS.load(Ordering::Relaxed)
}

/// The one line logged for panic number `n`. The message is escaped and
/// bounded: it may quote client input.
pub fn line(n: u64, ctx: Option<Context>, message: &str, location: Option<String>) -> String {
    let ctx = ctx.unwrap_or_default();
    format!(
        "{PANIC_MARKER} #{n} while serving {} for client pid {}: {} at {}; this is a bug in snix-lower-store, please report it \
         with this line (the daemon goes on serving; the client saw its connection close)",
        ctx.op.unwrap_or("no op (outside a request)"),
        ctx.peer_pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string()),
        snix_lower_store_types::path::shown(message),
        location.as_deref().unwrap_or("an unknown location"),
    )
}

/// Count a panic and return its line; what the installed hook does, callable
/// from tests without panicking. Takes the hook info's parts (its type is
/// newer than the crate's minimum Rust version).
pub fn record(payload: &(dyn std::any::Any + Send), location: Option<&std::panic::Location<'_>>) -> String {
    let n = PANICS.fetch_add(1, Ordering::Relaxed) + 1;
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a non-string panic payload)");
    let location = location.map(|l| format!("{}:{}", l.file(), l.line()));
    line(n, current(), message, location)
}

/// Replace the default hook (message plus backtrace on stderr) with one
/// error-level log line per panic. Call after logging is set up.
pub fn install() {
    std::panic::set_hook(Box::new(|info| {
        let l = record(info.payload(), info.location());
        if tracing::dispatcher::has_been_set() {
            tracing::error!("{l}");
        } else {
            eprintln!("{l}");
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_names_op_pid_and_escapes_the_message() {
        let l = line(
            3,
            Some(Context {
                op: Some("IsValidPath"),
                peer_pid: Some(42),
            }),
            "byte index 32 is not a char boundary; it is inside 'Б' (bytes 31..33) of `aaБ`\nsecond line",
            Some("daemon/src/store/path.rs:31".into()),
        );
        assert!(l.starts_with(PANIC_MARKER), "{l}");
        assert!(l.contains("#3 while serving IsValidPath for client pid 42"), "{l}");
        assert!(l.contains("\\u{411}") && l.contains("\\nsecond line"), "{l}");
        assert!(!l.contains('\n'), "one line: {l}");
        assert!(l.contains("at daemon/src/store/path.rs:31"), "{l}");
        let none = line(1, None, "x", None);
        assert!(
            none.contains("no op (outside a request) for client pid unknown"),
            "{none}"
        );
    }

    /// The e2e suite (which does not link this crate) searches for the same marker.
    #[test]
    fn the_e2e_suite_searches_for_this_marker() {
        let e2e = include_str!("../../e2e/src/daemons.rs");
        assert!(e2e.contains(&format!("PANIC_MARKER: &str = \"{PANIC_MARKER}\";")));
    }

    /// The hook function itself, run by a real panic on a task serving a
    /// request: it counts, and its line carries the task's context. The test
    /// sets a hook of its own that calls `record` (tests run in one process,
    /// so the lines are found by pid, not by position).
    #[test]
    fn hook_counts_and_reports_the_task_context() {
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let sink = lines.clone();
        let before = count();
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            sink.lock().unwrap().push(record(info.payload(), info.location()))
        }));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let joined = rt.block_on(async {
            tokio::spawn(scope(
                Context {
                    op: None,
                    peer_pid: Some(4242),
                },
                async {
                    tokio::task::yield_now().await;
                    set_op(Some("QueryPathInfo"));
                    tokio::task::yield_now().await;
                    let s = String::from("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaБ-x");
                    let at = std::hint::black_box(32);
                    s.split_at(at).0.len()
                },
            ))
            .await
        });
        let blocking = std::thread::spawn(|| {
            let ctx = Context {
                op: Some("NarFromPath"),
                peer_pid: Some(7),
            };
            let r = std::panic::catch_unwind(|| in_blocking::<()>(Some(ctx), || panic!("in a blocking writer")));
            // Unwinding restored the thread's previous (empty) context.
            (r.is_err(), current())
        })
        .join()
        .unwrap();
        std::panic::set_hook(prev);
        assert!(joined.is_err());
        assert_eq!(blocking, (true, None));
        let lines = lines.lock().unwrap();
        assert!(count() >= before + 2, "{lines:?}");
        let task = lines
            .iter()
            .find(|l| l.contains("pid 4242"))
            .expect("a line for the task's panic");
        assert!(
            task.contains("while serving QueryPathInfo for client pid 4242"),
            "{task}"
        );
        assert!(task.contains("not a char boundary"), "{task}");
        let blocking = lines
            .iter()
            .find(|l| l.contains("pid 7"))
            .expect("a line for the blocking panic");
        assert!(
            blocking.contains("while serving NarFromPath for client pid 7"),
            "{blocking}"
        );
    }
}
