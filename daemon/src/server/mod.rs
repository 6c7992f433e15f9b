//! The server loop: accept connections, run the handshake, then read one
//! request at a time and write its reply, until the client hangs up.
//!
//! A malformed request or an unknown op ends that connection only; a refused
//! op (error reply) leaves it usable. NarFromPath streams the NAR from a
//! blocking thread through a bounded channel, so memory stays constant.

pub mod ops;
pub mod peer;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

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

/// Counters reported in logs and the service status.
#[derive(Default)]
pub struct Stats {
    pub open_connections: AtomicU64,
    pub total_connections: AtomicU64,
    pub requests: AtomicU64,
}

pub struct Server {
    pub store: LowerStore,
    pub trusted_users: Vec<String>,
    pub limits: Limits,
    pub daemon_version: String,
    pub stats: Stats,
}

impl Server {
    /// Accept connections forever (until the listener fails).
    pub async fn run(self: Arc<Self>, listener: UnixListener) -> std::io::Result<()> {
        loop {
            let (stream, _) = listener.accept().await?;
            let me = self.clone();
            tokio::spawn(async move { me.connection(stream).await });
        }
    }

    pub async fn connection(self: Arc<Self>, stream: UnixStream) {
        let peer = stream
            .peer_cred()
            .map(|c| Peer { pid: c.pid(), uid: Some(c.uid()), gid: Some(c.gid()) })
            .unwrap_or_default();
        self.stats.open_connections.fetch_add(1, Ordering::Relaxed);
        self.stats.total_connections.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let result = self.session(stream, peer).await;
        self.stats.open_connections.fetch_sub(1, Ordering::Relaxed);
        match result {
            Ok(n) => debug!(client_pid = peer.pid, client_uid = peer.uid, requests = n, duration_ms = started.elapsed().as_millis() as u64, "connection closed"),
            Err(e) => warn!(client_pid = peer.pid, client_uid = peer.uid, error = %e, "connection ended with an error"),
        }
    }

    async fn session(&self, stream: UnixStream, peer: Peer) -> Result<u64, String> {
        let (rd, mut wr) = stream.into_split();
        let mut r = WireReader::new(BufReader::with_capacity(16 * 1024, rd), self.limits);
        let trusted = peer::is_trusted(&peer, &self.trusted_users);
        let neg = serve_handshake(&mut r, &mut wr, &self.daemon_version, trusted).await.map_err(|e| format!("handshake: {e}"))?;
        let v = neg.version;
        debug!(client_pid = peer.pid, client_uid = peer.uid, protocol = %v, trusted, "client connected");
        let mut served = 0u64;
        loop {
            let word = match r.u64().await {
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
            let reply = self.store.answer(&req, v);
            let outcome = match &reply {
                Reply::Error(m) => format!("error: {m}"),
                _ => "ok".to_owned(),
            };
            self.write_reply(&mut wr, v, reply).await.map_err(|e| format!("{}: writing the reply: {e}", op.name()))?;
            debug!(
                op = op.name(),
                path = req.subject().unwrap_or(""),
                client_pid = peer.pid,
                client_uid = peer.uid,
                duration_us = t0.elapsed().as_micros() as u64,
                result = %outcome,
                "request"
            );
        }
    }

    async fn write_reply<W: AsyncWrite + Unpin>(&self, w: &mut W, v: ProtoVersion, reply: Reply) -> std::io::Result<()> {
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
                // VerifyStore reads every object: keep it off the async threads.
                let problems = tokio::task::block_in_place(|| {
                    crate::verify::verify(&store.index, &store.lower, &store.store_dir, check_contents)
                });
                match problems {
                    Ok(problems) => {
                        for p in &problems {
                            stderr::next(&mut out, p);
                        }
                        stderr::last(&mut out);
                        out.bool(!problems.is_empty());
                    }
                    Err(e) => stderr::error(&mut out, v, &format!("VerifyStore: the lower store's index failed: {e}")),
                }
                w.write_all(&out.0).await?;
            }
            Reply::Nar(path) => {
                stderr::last(&mut out);
                w.write_all(&out.0).await?;
                let object = self.store.lower.object(&path);
                let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
                let producer = tokio::task::spawn_blocking(move || {
                    let mut nar = NarWriter::new(ChunkSender { tx, buf: Vec::with_capacity(CHUNK) });
                    nar.write_nar(&object)?;
                    nar.into_inner().finish()
                });
                while let Some(chunk) = rx.recv().await {
                    w.write_all(&chunk).await?;
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
    buf: Vec<u8>,
}

impl ChunkSender {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx.blocking_send(full).map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
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
        index = %server.store.index.db_path().display(),
        store_dir = server.store.store_dir.as_str(),
        "serving the lower store"
    );
}
