//! A minimal worker-protocol client: handshake, one op at a time, STDERR
//! processing. Used by the tests (every op through a real unix socket), the
//! demo's self-check, the benches and the fuzz targets; it speaks to Nix's
//! own daemon too.
//!
//! It encodes requests and decodes replies with the daemon's own types
//! (`protocol::request`, `protocol::codec`): [`Client::call`] sends a typed
//! request and returns its typed reply. Its limits are generous (it trusts
//! the daemon more than the daemon trusts it) but still bounded.

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use snix_lower_store_protocol::codec::{
    ClientMagic, ClientObsolete, ClientVersion, Features, ServerHello, ServerInfo, StderrFrame, TrustedFlag,
    UnkeyedValidPathInfo, Wire,
};
use snix_lower_store_protocol::request::{IsValidPath, NarFromPath, QueryPathInfo, QueryValidPaths, Request};
use snix_lower_store_protocol::wire::{Limits, ProtocolError, WireBuf, WireReader};
use snix_lower_store_protocol::ProtoVersion;

/// A connected, handshaken client.
pub struct Client {
    /// The daemon's side of the socket (for reading a NAR or raw bytes).
    pub r: WireReader<BufReader<OwnedReadHalf>>,
    /// Our side (for sending raw bytes, e.g. hostile input in tests).
    pub w: OwnedWriteHalf,
    /// The negotiated version (`r` reads at it; requests are written at it).
    pub version: ProtoVersion,
    /// The daemon's version string (1.33+).
    pub daemon_version: Option<String>,
    /// Whether the daemon trusts us (1.35+).
    pub trust: Option<TrustedFlag>,
    /// Log lines (STDERR_NEXT, trailing newline removed) of the last op.
    pub log: Vec<String>,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The daemon answered with STDERR_ERROR; this is its message.
    #[error("daemon error: {0}")]
    Daemon(String),
    #[error("unexpected: {0}")]
    Unexpected(String),
}

pub type Result<T> = std::result::Result<T, ClientError>;

impl Client {
    /// Connect and handshake, offering protocol 1.`minor`.
    pub async fn connect(socket: &std::path::Path, minor: u8) -> Result<Client> {
        Client::over(UnixStream::connect(socket).await?, minor).await
    }

    /// Handshake over a stream that is already connected (one end of a
    /// socketpair in the `session` fuzz target), offering protocol 1.`minor`.
    pub async fn over(s: UnixStream, minor: u8) -> Result<Client> {
        let (rd, w) = s.into_split();
        let limits = Limits {
            max_string: 1 << 30,
            max_list: 1 << 24,
        };
        let mut c = Client {
            r: WireReader::new(BufReader::new(rd), limits).with_version(ProtoVersion(minor)),
            w,
            version: ProtoVersion(minor),
            daemon_version: None,
            trust: None,
            log: Vec::new(),
        };
        let offered = ProtoVersion(minor);
        let mut b = WireBuf::new(offered);
        ClientMagic::default().encode(&mut b);
        ClientVersion(offered.to_wire()).encode(&mut b);
        c.w.write_all(&b.0).await?;
        let hello = ServerHello::decode(&mut c.r).await?;
        c.version = ProtoVersion(((hello.version & 0xff) as u8).min(minor));
        let v = c.version;
        c.r.set_version(v);
        let mut b = WireBuf::new(v);
        if v.at_least(38) {
            Features::default().encode(&mut b);
            c.w.write_all(&b.0).await?;
            Features::decode(&mut c.r).await?;
            b = WireBuf::new(v);
        }
        ClientObsolete::default().encode(&mut b);
        c.w.write_all(&b.0).await?;
        let info = ServerInfo::decode(&mut c.r).await?;
        c.daemon_version = info.daemon_version;
        c.trust = info.trust;
        c.stderr().await?;
        Ok(c)
    }

    /// Read STDERR messages until STDERR_LAST (Ok) or STDERR_ERROR (Err),
    /// keeping the log lines in `self.log`.
    pub async fn stderr(&mut self) -> Result<()> {
        self.log.clear();
        loop {
            match StderrFrame::decode(&mut self.r).await? {
                StderrFrame::Last => return Ok(()),
                StderrFrame::Next(l) => self.log.push(l.strip_suffix('\n').unwrap_or(&l).to_owned()),
                StderrFrame::Error(e) => return Err(ClientError::Daemon(e.msg)),
                StderrFrame::StartActivity { .. } | StderrFrame::StopActivity { .. } | StderrFrame::Result { .. } => {}
            }
        }
    }

    /// Send a request without waiting for the answer.
    pub async fn send<Q: Request>(&mut self, q: &Q) -> Result<()> {
        let mut b = WireBuf::new(self.version);
        b.u64(Q::OP as u64);
        q.encode(&mut b);
        self.w.write_all(&b.0).await?;
        Ok(())
    }

    /// Send a request, process STDERR and decode the reply.
    pub async fn call<Q: Request>(&mut self, q: &Q) -> Result<Q::Reply> {
        self.send(q).await?;
        self.stderr().await?;
        Ok(Q::Reply::decode(&mut self.r).await?)
    }

    /// Send an op word the daemon may not know, with raw arguments, and
    /// process STDERR (for tests of hostile input only).
    pub async fn call_raw(&mut self, op: u64, args: &WireBuf) -> Result<()> {
        let mut b = WireBuf::default();
        b.u64(op);
        b.0.extend_from_slice(&args.0);
        self.w.write_all(&b.0).await?;
        self.stderr().await
    }

    pub async fn is_valid_path(&mut self, path: &str) -> Result<bool> {
        self.call(&IsValidPath { path: path.into() }).await
    }

    pub async fn query_valid_paths(&mut self, paths: &[&str]) -> Result<Vec<String>> {
        let q = QueryValidPaths {
            paths: paths.iter().map(|p| p.to_string()).collect(),
            substitute: false,
        };
        self.call(&q).await
    }

    /// QueryPathInfo: `None` if not valid.
    pub async fn query_path_info(&mut self, path: &str) -> Result<Option<UnkeyedValidPathInfo>> {
        self.call(&QueryPathInfo { path: path.into() }).await
    }

    /// NarFromPath: reads exactly `nar_size` bytes (from QueryPathInfo).
    pub async fn nar_from_path(&mut self, path: &str, nar_size: u64) -> Result<Vec<u8>> {
        self.call(&NarFromPath { path: path.into() }).await?;
        let mut buf = vec![0u8; nar_size as usize];
        self.r.get_mut().read_exact(&mut buf).await?;
        Ok(buf)
    }
}
