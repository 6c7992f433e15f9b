//! Connection limits, request accounting and the wake-ups behind them: the
//! `--max-connections` semaphore, the bound on clients being refused, the
//! RAII guards that keep `Stats`'s counters, and the waits that the accept
//! loop (idle exit) and the shutdown drain block on instead of polling.
//!
//! Invariants:
//! - `open_connections` counts live [`Open`] guards and `in_flight` live
//!   [`InFlight`] guards: each guard adds one when made and takes it back when
//!   dropped, on every path (a panic unwinding a connection task included).
//! - An admitted connection holds one permit of the connection semaphore for
//!   as long as its task runs; a refused client holds one of
//!   [`REFUSING_AT_ONCE`] permits while it is told why. When both are gone,
//!   the accept loop closes the stream at once: no task per refused client.
//! - `conns_changed` is notified after every change of `open_connections`
//!   (and after `last_close` is set), `settled` whenever `in_flight` drops to
//!   zero; waiters enable their `Notified` before reading the counter, so no
//!   change is missed.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::{Server, Stats};

/// Clients over `--max-connections` that are told why at once (each for at
/// most ~10 s: handshake, then the first op). Beyond that, more are closed
/// without a word, so a flood of clients cannot grow tasks without bound.
pub const REFUSING_AT_ONCE: usize = 32;

/// The semaphores and notifications behind [`Stats`]. Made by `Stats::default()`;
/// the connection semaphore is sized from `ConnLimits` on first use, so every
/// accept loop of one `Server` shares it.
pub(crate) struct Gates {
    connections: OnceLock<Arc<Semaphore>>,
    refusals: Arc<Semaphore>,
    /// A connection opened or closed.
    conns_changed: Notify,
    /// `in_flight` dropped to zero.
    settled: Notify,
}

impl Default for Gates {
    fn default() -> Self {
        Gates {
            connections: OnceLock::new(),
            refusals: Arc::new(Semaphore::new(REFUSING_AT_ONCE)),
            conns_changed: Notify::new(),
            settled: Notify::new(),
        }
    }
}

/// One request being answered: counted in `Stats::in_flight` until dropped.
#[must_use = "the request counts as in flight only while this guard lives"]
pub struct InFlight<'a> {
    stats: &'a Stats,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.stats.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.stats.gates.settled.notify_waiters();
        }
    }
}

impl Stats {
    /// Count a request as in flight until the returned guard is dropped
    /// (after its reply is written); `Server::drain` waits for none.
    pub fn answering(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight { stats: self }
    }

    /// Clients over the limit being told why right now (at most
    /// [`REFUSING_AT_ONCE`]).
    pub fn refusing(&self) -> usize {
        REFUSING_AT_ONCE - self.gates.refusals.available_permits()
    }

    /// Resolves once no request is in flight.
    pub(crate) async fn settled(&self) {
        loop {
            let notified = self.gates.settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Resolves once no connection has been open for `after`, counting from
    /// `since` or the last close, whichever is later.
    async fn idle_for(&self, after: Duration, since: Instant) {
        loop {
            let changed = self.gates.conns_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.open_connections.load(Ordering::Acquire) > 0 {
                changed.await;
                continue;
            }
            let closed = *self.last_close.lock().unwrap_or_else(|e| e.into_inner());
            let from = closed.map_or(since, |c| c.max(since));
            tokio::select! {
                _ = tokio::time::sleep_until(from + after) => return,
                _ = changed => {}
            }
        }
    }
}

/// One admitted connection: counted in `Stats::open_connections`, holding its
/// slot of `--max-connections` (if it came through the accept loop) until
/// dropped, when it records `last_close`.
pub(crate) struct Open {
    server: Arc<Server>,
    _slot: Option<OwnedSemaphorePermit>,
}

impl Open {
    fn new(server: Arc<Server>, slot: Option<OwnedSemaphorePermit>) -> Open {
        let stats = &server.stats;
        stats.open_connections.fetch_add(1, Ordering::AcqRel);
        stats.gates.conns_changed.notify_waiters();
        Open { server, _slot: slot }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let stats = &self.server.stats;
        *stats.last_close.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        stats.open_connections.fetch_sub(1, Ordering::AcqRel);
        stats.gates.conns_changed.notify_waiters();
    }
}

/// What the accept loop does with a new client.
pub(crate) enum Admission {
    /// Serve it.
    Serve(Open),
    /// Over the limit: tell it why, holding this permit meanwhile.
    Refuse(OwnedSemaphorePermit),
    /// Over the limit and too many are being told already: close it.
    Close,
}

impl Server {
    fn connection_slots(&self) -> &Arc<Semaphore> {
        self.stats.gates.connections.get_or_init(|| {
            let max = usize::try_from(self.conn_limits.max_connections).unwrap_or(usize::MAX);
            Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS)))
        })
    }

    /// Take a slot of `--max-connections` for a new client, or a refusal slot.
    pub(crate) fn admit(self: &Arc<Self>) -> Admission {
        if let Ok(slot) = self.connection_slots().clone().try_acquire_owned() {
            return Admission::Serve(Open::new(self.clone(), Some(slot)));
        }
        match self.stats.gates.refusals.clone().try_acquire_owned() {
            Ok(permit) => Admission::Refuse(permit),
            Err(_) => Admission::Close,
        }
    }

    /// Count a connection that did not come through the accept loop (no
    /// `--max-connections` slot), e.g. one handed to `Server::connection`.
    pub(crate) fn open_unlimited(self: &Arc<Self>) -> Open {
        Open::new(self.clone(), None)
    }

    /// Resolves when `idle_exit_after` has passed with no connection open
    /// (counting from `since` or the last close); never without it.
    pub(crate) async fn idle_exit(&self, idle_exit_after: Option<Duration>, since: Instant) {
        match idle_exit_after {
            Some(after) => self.stats.idle_for(after, since).await,
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use super::Stats;

    /// `settled` resolves only when the last of several in-flight guards is
    /// dropped, woken by the drop (paused clock: no polling interval).
    #[tokio::test(start_paused = true)]
    async fn settled_waits_for_the_last_guard() {
        let stats = Stats::default();
        let first = stats.answering();
        let second = stats.answering();
        assert_eq!(stats.in_flight.load(Ordering::Relaxed), 2);
        let settled = stats.settled();
        tokio::pin!(settled);
        assert!(tokio::time::timeout(Duration::from_secs(1), settled.as_mut())
            .await
            .is_err());
        drop(first);
        assert!(tokio::time::timeout(Duration::from_secs(1), settled.as_mut())
            .await
            .is_err());
        drop(second);
        assert!(tokio::time::timeout(Duration::from_secs(1), settled.as_mut())
            .await
            .is_ok());
        assert_eq!(stats.in_flight.load(Ordering::Relaxed), 0);
    }

    /// With no connection ever open, `idle_for` ends no sooner than `after`.
    #[tokio::test(start_paused = true)]
    async fn idle_for_counts_from_since() {
        let stats = Stats::default();
        let since = tokio::time::Instant::now();
        stats.idle_for(Duration::from_secs(5), since).await;
        assert!(since.elapsed() >= Duration::from_secs(5));
    }
}
