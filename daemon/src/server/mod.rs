//! The server loop: accept connections, run the handshake, then read one
//! request at a time and write its reply, until the client hangs up.
//!
//! A malformed request or an unknown op ends that connection only; a refused
//! op (error reply) leaves it usable (`error::SessionError::can_recover`).
//! Each connection runs inside a panic context (`crate::panics`) holding the
//! peer pid and the op being served. The session itself (request loop,
//! replies, NAR streaming) is in `session`; what each op answers in `ops`.

mod error;
pub mod grpc;
mod limits;
pub mod ops;
pub mod peer;
mod session;

pub use limits::{InFlight, REFUSING_AT_ONCE};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::BufReader;
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, info, warn};

use ops::LowerStore;
use peer::Peer;
use session::send_error;
use snix_lower_store_protocol::handshake::serve_handshake;
use snix_lower_store_protocol::wire::{Limits, WireReader};

/// Counters reported in logs and the service status, and the semaphores and
/// notifications behind them (`limits`).
#[derive(Default)]
pub struct Stats {
    /// Connections being served (not those being refused); kept by `limits::Open`.
    pub open_connections: AtomicU64,
    pub total_connections: AtomicU64,
    pub requests: AtomicU64,
    /// Requests read and not yet fully answered; kept by [`InFlight`] guards
    /// (`Stats::answering`).
    pub in_flight: AtomicU64,
    /// When the last connection closed: idle time counts from there.
    pub last_close: std::sync::Mutex<Option<tokio::time::Instant>>,
    gates: limits::Gates,
}

/// Why `Server::run` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Signal,
    Idle,
}

/// Limits on connections (decoding limits are in `Limits`).
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// Connections served at once; more are told to retry and closed.
    pub max_connections: u64,
    /// Close a connection that sends no request for this long.
    pub idle_timeout: Option<Duration>,
    /// Close a connection that has not finished the handshake by then.
    pub handshake_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: 4096,
            idle_timeout: None,
            handshake_timeout: Duration::from_secs(30),
        }
    }
}

pub struct Server {
    pub store: LowerStore,
    pub trusted_users: Vec<String>,
    pub limits: Limits,
    pub conn_limits: ConnLimits,
    pub daemon_version: String,
    pub stats: Stats,
}

impl Server {
    /// Accept connections until `shutdown` resolves or, with `idle_exit_after`,
    /// until no connection has been open for that long. Returns why it stopped.
    ///
    /// Accepting happens only in this loop, so once it decides to stop no
    /// connection has been taken off the socket: under socket activation the
    /// ones still queued wait there for the next start.
    pub async fn run(
        self: Arc<Self>,
        listeners: Vec<UnixListener>,
        idle_exit_after: Option<Duration>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<Stop> {
        tokio::pin!(shutdown);
        let started = tokio::time::Instant::now();
        loop {
            let accept = std::future::poll_fn(|cx| {
                for l in &listeners {
                    if let std::task::Poll::Ready(r) = l.poll_accept(cx) {
                        return std::task::Poll::Ready(r);
                    }
                }
                std::task::Poll::Pending
            });
            tokio::select! {
                r = accept => {
                    let (stream, _) = r?;
                    self.dispatch(stream);
                }
                _ = &mut shutdown => return Ok(Stop::Signal),
                _ = self.idle_exit(idle_exit_after, started) => return Ok(Stop::Idle),
            }
        }
    }

    /// Serve a new client, refuse it with a reason, or (when too many are
    /// being refused already) close it at once. Counted as open before the
    /// accept loop's next idle check.
    fn dispatch(self: &Arc<Self>, stream: UnixStream) {
        let me = self.clone();
        match self.admit() {
            limits::Admission::Serve(open) => {
                tokio::spawn(async move { me.serve_connection(open, stream).await });
            }
            limits::Admission::Refuse(permit) => {
                tokio::spawn(async move {
                    me.refuse_busy(stream).await;
                    drop(permit);
                });
            }
            limits::Admission::Close => warn!(
                max_connections = self.conn_limits.max_connections,
                refusing = REFUSING_AT_ONCE,
                "connection limit reached and {REFUSING_AT_ONCE} clients are being refused already; \
                 closing a client without a reply (raise --max-connections if this is expected load)"
            ),
        }
    }

    /// Wait until no request is being answered, at most `bound`. True if none is.
    pub async fn drain(&self, bound: Duration) -> bool {
        tokio::time::timeout(bound, self.stats.settled()).await.is_ok()
    }

    /// Over --max-connections: finish the handshake so the client can show
    /// why, then close.
    async fn refuse_busy(&self, stream: UnixStream) {
        let max = self.conn_limits.max_connections;
        warn!(
            max_connections = max,
            "connection limit reached; refusing a client (raise --max-connections if this is expected load)"
        );
        let (rd, mut wr) = stream.into_split();
        let mut r = WireReader::new(BufReader::new(rd), self.limits);
        let hs = tokio::time::timeout(
            Duration::from_secs(5),
            serve_handshake(&mut r, &mut wr, &self.daemon_version, false),
        )
        .await;
        if let Ok(Ok(neg)) = hs {
            let msg = format!(
                "snix-lower-store is serving its limit of {max} connections; retry later (or raise --max-connections)"
            );
            let _ = tokio::time::timeout(Duration::from_secs(5), r.u64()).await;
            send_error(&mut wr, neg.version, &msg).await;
        }
    }

    /// Serve a connection that did not come through [`Server::run`] (tests,
    /// fuzzing): counted as open, outside `--max-connections`.
    pub async fn connection(self: Arc<Self>, stream: UnixStream) {
        let open = self.open_unlimited();
        self.serve_connection(open, stream).await
    }

    /// Serve one admitted connection; `open` keeps it counted until the end.
    async fn serve_connection(self: Arc<Self>, open: limits::Open, stream: UnixStream) {
        let peer = stream
            .peer_cred()
            .map(|c| Peer {
                pid: c.pid(),
                uid: Some(c.uid()),
                gid: Some(c.gid()),
            })
            .unwrap_or_default();
        self.stats.total_connections.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let ctx = crate::panics::Context {
            op: None,
            peer_pid: peer.pid,
        };
        let result = crate::panics::scope(ctx, self.session(stream, peer)).await;
        drop(open);
        match result {
            Ok(n) => debug!(
                client_pid = peer.pid,
                client_uid = peer.uid,
                requests = n,
                duration_ms = started.elapsed().as_millis() as u64,
                "connection closed"
            ),
            Err(e) => warn!(client_pid = peer.pid, client_uid = peer.uid, error = %e, "connection ended with an error"),
        }
    }
}

/// Log a one-line summary at startup.
pub fn log_start(server: &Server, listen: &str) {
    info!(
        listen,
        lower_dir = %server.store.lower.root().display(),
        backend = %server.store.backend.describe(),
        store_dir = server.store.store_dir.as_str(),
        "serving the lower store"
    );
}
