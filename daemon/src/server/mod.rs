//! The server loop: accept connections, run the handshake, then read one
//! request at a time and write its reply, until the client hangs up.
//!
//! A malformed request or an unknown op ends that connection only; a refused
//! op (error reply) leaves it usable. Each connection runs inside a panic
//! context (`crate::panics`) holding the peer pid and the op being served.
//! NarFromPath streams the NAR from a blocking thread through a bounded
//! channel, so memory stays constant.

mod limits;
pub mod ops;
pub mod peer;

pub use limits::{InFlight, REFUSING_AT_ONCE};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, info, warn};

use crate::protocol::handshake::serve_handshake;
use crate::protocol::request::{read_request, Op};
use crate::protocol::stderr;
use crate::protocol::wire::{Limits, ProtocolError, WireBuf, WireReader};
use crate::protocol::ProtoVersion;
use crate::store::nar::NarWriter;
use ops::{LowerStore, Reply};
use peer::Peer;

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

    async fn session(&self, stream: UnixStream, peer: Peer) -> Result<u64, String> {
        let (rd, mut wr) = stream.into_split();
        let mut r = WireReader::new(BufReader::with_capacity(16 * 1024, rd), self.limits);
        let trusted = peer::is_trusted(&peer, &self.trusted_users).await;
        let neg = tokio::time::timeout(
            self.conn_limits.handshake_timeout,
            serve_handshake(&mut r, &mut wr, &self.daemon_version, trusted),
        )
        .await
        .map_err(|_| {
            format!(
                "handshake not finished within {:?} (--handshake-timeout); closed",
                self.conn_limits.handshake_timeout
            )
        })?
        .map_err(|e| format!("handshake: {e}"))?;
        let v = neg.version;
        debug!(client_pid = peer.pid, client_uid = peer.uid, protocol = %v, trusted, "client connected");
        let mut served = 0u64;
        loop {
            let next = match self.conn_limits.idle_timeout {
                Some(t) => match tokio::time::timeout(t, r.u64()).await {
                    Ok(w) => w,
                    Err(_) => {
                        info!(client_pid = peer.pid, client_uid = peer.uid, idle_timeout = ?t, "closing a connection idle for longer than --idle-timeout");
                        return Ok(served);
                    }
                },
                None => r.u64().await,
            };
            let word = match next {
                Ok(w) => w,
                Err(ProtocolError::Eof) => return Ok(served),
                Err(e) => return Err(e.to_string()),
            };
            let Some(op) = Op::from_u64(word) else {
                let msg = format!("unknown worker op {word}; this connection is closed (snix-lower-store speaks protocol 1.21 to 1.38)");
                send_error(&mut wr, v, &msg).await;
                return Err(msg);
            };
            let t0 = Instant::now();
            crate::panics::set_op(Some(op.name()));
            let req = match read_request(&mut r, op, v).await {
                Ok(q) => q,
                Err(ProtocolError::Eof) => return Err(format!("{}: client hung up mid-request", op.name())),
                Err(e) => {
                    let msg = format!("{}: malformed request: {e}; this connection is closed", op.name());
                    send_error(&mut wr, v, &msg).await;
                    return Err(msg);
                }
            };
            served += 1;
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let in_flight = self.stats.answering();
            let reply = self.store.answer(&req, v).await;
            let refused = match &reply {
                Reply::Error(m) => Some(m.clone()),
                _ => None,
            };
            let written = self.write_reply(&mut wr, v, reply).await;
            drop(in_flight);
            crate::panics::set_op(None);
            written.map_err(|e| format!("{}: writing the reply: {e}", op.name()))?;
            // Field names become journald fields (OP, STORE_PATH, …).
            let duration_us = t0.elapsed().as_micros() as u64;
            let store_path = req.subject().unwrap_or("");
            match refused {
                None => debug!(
                    op = op.name(),
                    store_path,
                    client_pid = peer.pid,
                    client_uid = peer.uid,
                    duration_us,
                    result = "ok",
                    "request"
                ),
                Some(m) => {
                    info!(op = op.name(), store_path, client_pid = peer.pid, client_uid = peer.uid, duration_us, result = "error", error = %m, "request refused")
                }
            }
        }
    }

    async fn write_reply<W: AsyncWrite + Unpin>(
        &self,
        w: &mut W,
        v: ProtoVersion,
        reply: Reply,
    ) -> std::io::Result<()> {
        let mut out = WireBuf::default();
        match reply {
            Reply::Data { log, body } => {
                for line in &log {
                    stderr::next(&mut out, line);
                }
                stderr::last(&mut out);
                out.0.extend_from_slice(&body.0);
                w.write_all(&out.0).await?;
            }
            Reply::Error(msg) => {
                stderr::error(&mut out, v, &msg);
                w.write_all(&out.0).await?;
            }
            Reply::Verify { check_contents } => {
                let store = &self.store;
                let entries = store.backend.all_hashes().await;
                match entries {
                    Ok(entries) => {
                        // VerifyStore reads every object: keep it off the async threads.
                        let problems = tokio::task::block_in_place(|| {
                            crate::verify::verify(&entries, &store.lower, &store.store_dir, check_contents)
                        });
                        for p in &problems {
                            stderr::next(&mut out, p);
                        }
                        stderr::last(&mut out);
                        out.bool(!problems.is_empty());
                    }
                    Err(e) => stderr::error(
                        &mut out,
                        v,
                        &format!("VerifyStore: the lower store's metadata backend failed: {e}"),
                    ),
                }
                w.write_all(&out.0).await?;
            }
            Reply::Nar(path) => {
                stderr::last(&mut out);
                w.write_all(&out.0).await?;
                let object = self.store.lower.object(&path);
                let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
                // Written chunks go back to the producer: a handful of
                // buffers per transfer instead of one allocation per chunk.
                let (free_tx, free_rx) = std::sync::mpsc::channel::<Vec<u8>>();
                let ctx = crate::panics::current();
                let producer = tokio::task::spawn_blocking(move || {
                    crate::panics::in_blocking(ctx, || {
                        let mut nar = NarWriter::new(ChunkSender {
                            tx,
                            free: free_rx,
                            buf: Vec::with_capacity(CHUNK),
                        });
                        nar.write_nar(&object)?;
                        nar.into_inner().finish()
                    })
                });
                while let Some(mut chunk) = rx.recv().await {
                    w.write_all(&chunk).await?;
                    chunk.clear();
                    let _ = free_tx.send(chunk);
                }
                // The NAR was announced with STDERR_LAST: if it broke off, the
                // client cannot resync, so the connection must end.
                match producer.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(std::io::Error::other(format!("serializing {}: {e}", path))),
                    Err(e) => return Err(std::io::Error::other(format!("serializing {}: {e}", path))),
                }
            }
        }
        w.flush().await
    }
}

async fn send_error<W: AsyncWrite + Unpin>(w: &mut W, v: ProtoVersion, msg: &str) {
    let mut out = WireBuf::default();
    stderr::error(&mut out, v, msg);
    let _ = w.write_all(&out.0).await;
    let _ = w.flush().await;
}

const CHUNK: usize = 256 * 1024;

/// A blocking `Write` feeding NAR chunks to the async side.
struct ChunkSender {
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    free: std::sync::mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
}

impl ChunkSender {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = self.free.try_recv().unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        let full = std::mem::replace(&mut self.buf, next);
        self.tx
            .blocking_send(full)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }

    fn finish(mut self) -> std::io::Result<()> {
        self.send()
    }
}

impl std::io::Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
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
