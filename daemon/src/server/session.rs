//! One client session: the handshake, then one request at a time until the
//! client hangs up.
//!
//! [`Conn::serve_op`] is the one place a request is decoded, answered and
//! replied to: STDERR_NEXT per log line, STDERR_LAST and the encoded reply,
//! or STDERR_ERROR with the op's error. Whether the connection goes on after
//! an error is [`SessionError::can_recover`]'s decision. Only the NAR of
//! NarFromPath is special: it is streamed from a blocking thread through a
//! bounded channel, so memory stays constant.

use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tracing::{debug, info};

use super::error::SessionError;
use super::ops::Serve;
use super::peer::{self, Peer};
use super::Server;
use snix_lower_store_protocol::codec::{StderrFrame, Wire};
use snix_lower_store_protocol::handshake::serve_handshake;
use snix_lower_store_protocol::request::Op;
use snix_lower_store_protocol::wire::{ProtocolError, WireBuf, WireReader};
use snix_lower_store_protocol::ProtoVersion;
use snix_lower_store_types::nar::NarWriter;
use snix_lower_store_types::StorePath;

/// A connection after the handshake.
pub(crate) struct Conn<'a, R, W> {
    server: &'a Server,
    r: WireReader<R>,
    w: W,
    peer: Peer,
}

impl Server {
    /// Serve one connection; returns the number of requests served.
    pub(super) async fn session(&self, stream: UnixStream, peer: Peer) -> Result<u64, SessionError> {
        let (rd, mut wr) = stream.into_split();
        let mut r = WireReader::new(BufReader::with_capacity(16 * 1024, rd), self.limits);
        let trusted = peer::is_trusted(&peer, &self.trusted_users).await;
        let timeout = self.conn_limits.handshake_timeout;
        let neg = tokio::time::timeout(timeout, serve_handshake(&mut r, &mut wr, &self.daemon_version, trusted))
            .await
            .map_err(|_| SessionError::HandshakeTimeout(timeout))??;
        debug!(client_pid = peer.pid, client_uid = peer.uid, protocol = %neg.version, trusted, "client connected");
        let mut conn = Conn {
            server: self,
            r,
            w: wr,
            peer,
        };
        conn.requests().await
    }
}

impl<R, W> Conn<'_, R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    /// Serve requests until the client hangs up or an error ends the session.
    async fn requests(&mut self) -> Result<u64, SessionError> {
        let mut served = 0u64;
        loop {
            let Some(word) = self.next_op_word().await? else {
                return Ok(served);
            };
            let result = match Op::from_u64(word) {
                Some(op) => {
                    crate::panics::set_op(Some(op.name()));
                    let r = dispatch(self, op).await;
                    crate::panics::set_op(None);
                    r
                }
                None => Err(SessionError::UnknownOp(word)),
            };
            match result {
                Ok(()) => served += 1,
                Err(e) if e.can_recover() => served += 1,
                Err(e) => {
                    if e.tell_client() {
                        send_error(&mut self.w, self.r.version(), &e.to_string()).await;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// The next op word; `None` at a clean end (EOF, or idle too long).
    async fn next_op_word(&mut self) -> Result<Option<u64>, SessionError> {
        let next = match self.server.conn_limits.idle_timeout {
            Some(t) => match tokio::time::timeout(t, self.r.u64()).await {
                Ok(w) => w,
                Err(_) => {
                    info!(client_pid = self.peer.pid, client_uid = self.peer.uid, idle_timeout = ?t, "closing a connection idle for longer than --idle-timeout");
                    return Ok(None);
                }
            },
            None => self.r.u64().await,
        };
        match next {
            Ok(w) => Ok(Some(w)),
            Err(ProtocolError::Eof) => Ok(None),
            Err(e) => Err(SessionError::Read(e)),
        }
    }

    /// Decode a `Q`, answer it and write the reply or its error. A refused
    /// op comes back as a recoverable [`SessionError::Op`], already answered.
    pub(super) async fn serve_op<Q: Serve>(&mut self) -> Result<(), SessionError> {
        let op = Q::OP;
        let t0 = Instant::now();
        let q = match Q::decode(&mut self.r).await {
            Ok(q) => q,
            Err(ProtocolError::Eof) => return Err(SessionError::HungUp(op)),
            Err(source) => return Err(SessionError::Malformed { op, source }),
        };
        self.server.stats.requests.fetch_add(1, Ordering::Relaxed);
        // Held until the reply (NAR stream included) is written: drain waits for it.
        let _in_flight = self.server.stats.answering();
        let mut out = WireBuf::new(self.r.version());
        let answered = self.server.store.answer(&q, &mut out).await;
        let written = match &answered {
            Ok(nar) => self.write_reply(&out, nar.as_ref()).await,
            Err(_) => self.write_all(&out).await,
        };
        written.map_err(|source| SessionError::Write { op, source })?;
        match answered {
            Ok(_) => {
                self.log_request(op, q.subject(), t0, None);
                Ok(())
            }
            Err(error) => {
                self.log_request(op, q.subject(), t0, Some(&error.render(op)));
                Err(SessionError::Op { op, error })
            }
        }
    }

    /// One log line per request. Field names become journald fields (OP,
    /// STORE_PATH, …).
    fn log_request(&self, op: Op, subject: Option<&str>, t0: Instant, refused: Option<&str>) {
        let duration_us = t0.elapsed().as_micros() as u64;
        let (store_path, pid, uid) = (subject.unwrap_or(""), self.peer.pid, self.peer.uid);
        match refused {
            None => debug!(
                op = op.name(),
                store_path,
                client_pid = pid,
                client_uid = uid,
                duration_us,
                result = "ok",
                "request"
            ),
            Some(m) => {
                info!(op = op.name(), store_path, client_pid = pid, client_uid = uid, duration_us, result = "error", error = %m, "request refused")
            }
        }
    }

    async fn write_all(&mut self, out: &WireBuf) -> std::io::Result<()> {
        self.w.write_all(&out.0).await?;
        self.w.flush().await
    }

    /// The encoded answer, then the NAR if there is one.
    async fn write_reply(&mut self, out: &WireBuf, nar: Option<&StorePath>) -> std::io::Result<()> {
        self.w.write_all(&out.0).await?;
        if let Some(path) = nar {
            self.stream_nar(path).await?;
        }
        self.w.flush().await
    }

    /// Stream the NAR of `path`, serialized on a blocking thread. The NAR was
    /// announced with STDERR_LAST: if it breaks off, the client cannot
    /// resync, so the error ends the connection.
    async fn stream_nar(&mut self, path: &StorePath) -> std::io::Result<()> {
        let object = self.server.store.lower.object(path);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
        // Written chunks go back to the producer: a handful of buffers per
        // transfer instead of one allocation per chunk.
        let (free_tx, free_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let ctx = crate::panics::current();
        let producer = tokio::task::spawn_blocking(move || {
            crate::panics::in_blocking(ctx, || {
                let mut nar = NarWriter::new(ChunkSender {
                    tx,
                    free: free_rx,
                    // Grows with the NAR up to CHUNK: a small NAR (most
                    // are) allocates little.
                    buf: Vec::new(),
                });
                nar.write_nar(&object)?;
                nar.into_inner().finish()
            })
        });
        while let Some(mut chunk) = rx.recv().await {
            self.w.write_all(&chunk).await?;
            chunk.clear();
            let _ = free_tx.send(chunk);
        }
        match producer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(std::io::Error::other(format!("serializing {path}: {e}"))),
            Err(e) => Err(std::io::Error::other(format!("serializing {path}: {e}"))),
        }
    }
}

/// Tell the client why its connection ends (best effort: it may be gone).
pub(super) async fn send_error<W: AsyncWrite + Unpin>(w: &mut W, v: ProtoVersion, msg: &str) {
    let mut out = WireBuf::new(v);
    StderrFrame::error(msg).encode(&mut out);
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
        let need = self.buf.len() + n;
        if need > self.buf.capacity() {
            // Doubling, but never past CHUNK.
            let cap = need.max(self.buf.capacity() * 2).min(CHUNK);
            self.buf.reserve_exact(cap - self.buf.len());
        }
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
/// The one dispatch table: every op of `for_each_op!` to its request type's
/// `Serve` impl (`server::ops`), through `Conn::serve_op`.
macro_rules! dispatch {
    ($($name:ident = $num:literal,)*) => {
        /// Decode, answer and reply to one request of `op`.
        async fn dispatch<R, W>(
            c: &mut Conn<'_, R, W>,
            op: snix_lower_store_protocol::request::Op,
        ) -> Result<(), SessionError>
        where
            R: tokio::io::AsyncRead + Unpin + Send,
            W: tokio::io::AsyncWrite + Unpin + Send,
        {
            use snix_lower_store_protocol::request::{self as q, Op};
            match op {
                $(Op::$name => c.serve_op::<q::$name>().await,)*
            }
        }
    };
}
snix_lower_store_protocol::request::for_each_op!(dispatch);
