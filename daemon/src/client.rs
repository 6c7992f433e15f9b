//! A minimal worker-protocol client: handshake, one op at a time, STDERR
//! processing. Used by the tests (every op through a real unix socket), the
//! demo's self-check and the benches; it speaks to Nix's own daemon too.

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use crate::protocol::stderr::*;
use crate::protocol::wire::{Limits, ProtocolError, WireBuf, WireReader};
use crate::protocol::{ProtoVersion, WORKER_MAGIC_1, WORKER_MAGIC_2};

pub struct Client {
    pub r: WireReader<BufReader<OwnedReadHalf>>,
    pub w: OwnedWriteHalf,
    pub version: ProtoVersion,
    pub daemon_version: Option<String>,
    /// 0 unknown, 1 trusted, 2 not trusted (1.35+).
    pub trust: Option<u64>,
    /// Log lines (STDERR_NEXT) of the last op.
    pub log: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
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
        let mut c = Client {
            r: WireReader::new(
                BufReader::new(rd),
                Limits {
                    max_string: 1 << 30,
                    max_list: 1 << 24,
                },
            ),
            w,
            version: ProtoVersion(minor),
            daemon_version: None,
            trust: None,
            log: Vec::new(),
        };
        let mut b = WireBuf::default();
        b.u64(WORKER_MAGIC_1).u64((1 << 8) | minor as u64);
        c.w.write_all(&b.0).await?;
        if c.r.u64().await? != WORKER_MAGIC_2 {
            return Err(ClientError::Unexpected("bad daemon magic".into()));
        }
        let dv = c.r.u64().await?;
        c.version = ProtoVersion(((dv & 0xff) as u8).min(minor));
        let mut b = WireBuf::default();
        if c.version.at_least(38) {
            b.u64(0); // no features
            c.w.write_all(&b.0).await?;
            c.r.strings("daemon features").await?;
            b = WireBuf::default();
        }
        b.u64(0).u64(0); // CPU affinity, reserveSpace
        c.w.write_all(&b.0).await?;
        if c.version.at_least(33) {
            c.daemon_version = Some(c.r.string("daemon version").await?);
        }
        if c.version.at_least(35) {
            c.trust = Some(c.r.u64().await?);
        }
        c.stderr().await?;
        Ok(c)
    }

    /// Read STDERR messages until STDERR_LAST (Ok) or STDERR_ERROR (Err).
    pub async fn stderr(&mut self) -> Result<()> {
        self.log.clear();
        loop {
            match self.r.u64().await? {
                STDERR_LAST => return Ok(()),
                STDERR_NEXT => {
                    let l = self.r.string("log").await?;
                    self.log.push(l.trim_end_matches('\n').to_owned());
                }
                STDERR_ERROR => {
                    let msg = if self.version.at_least(26) {
                        self.r.string("type").await?;
                        self.r.u64().await?;
                        self.r.string("name").await?;
                        let msg = self.r.string("msg").await?;
                        self.r.u64().await?;
                        let traces = self.r.u64().await?;
                        for _ in 0..traces {
                            self.r.u64().await?;
                            self.r.string("trace").await?;
                        }
                        msg
                    } else {
                        let msg = self.r.string("msg").await?;
                        self.r.u64().await?;
                        msg
                    };
                    return Err(ClientError::Daemon(msg));
                }
                STDERR_START_ACTIVITY => {
                    self.r.u64().await?;
                    self.r.u64().await?;
                    self.r.u64().await?;
                    self.r.string("activity").await?;
                    self.fields().await?;
                    self.r.u64().await?;
                }
                STDERR_STOP_ACTIVITY => {
                    self.r.u64().await?;
                }
                STDERR_RESULT => {
                    self.r.u64().await?;
                    self.r.u64().await?;
                    self.fields().await?;
                }
                other => return Err(ClientError::Unexpected(format!("STDERR word {other:#x}"))),
            }
        }
    }

    async fn fields(&mut self) -> Result<()> {
        let n = self.r.u64().await?;
        for _ in 0..n {
            match self.r.u64().await? {
                0 => {
                    self.r.u64().await?;
                }
                1 => {
                    self.r.string("field").await?;
                }
                t => return Err(ClientError::Unexpected(format!("field type {t}"))),
            }
        }
        Ok(())
    }

    /// Send op `op` with pre-encoded arguments and process STDERR.
    pub async fn call(&mut self, op: u64, args: &WireBuf) -> Result<()> {
        let mut b = WireBuf::default();
        b.u64(op);
        b.0.extend_from_slice(&args.0);
        self.w.write_all(&b.0).await?;
        self.stderr().await
    }

    pub async fn is_valid_path(&mut self, path: &str) -> Result<bool> {
        let mut a = WireBuf::default();
        a.str(path);
        self.call(1, &a).await?;
        Ok(self.r.bool("valid").await?)
    }

    pub async fn path_set_op(&mut self, op: u64, path: &str) -> Result<Vec<String>> {
        let mut a = WireBuf::default();
        a.str(path);
        self.call(op, &a).await?;
        Ok(self.r.strings("paths").await?)
    }

    pub async fn query_valid_paths(&mut self, paths: &[&str]) -> Result<Vec<String>> {
        let mut a = WireBuf::default();
        a.strings(paths.iter().copied());
        if self.version.at_least(27) {
            a.u64(0);
        }
        self.call(31, &a).await?;
        Ok(self.r.strings("paths").await?)
    }

    /// QueryPathInfo: `None` if not valid.
    pub async fn query_path_info(&mut self, path: &str) -> Result<Option<RawPathInfo>> {
        let mut a = WireBuf::default();
        a.str(path);
        self.call(26, &a).await?;
        if !self.r.bool("valid").await? {
            return Ok(None);
        }
        let deriver = self.r.string("deriver").await?;
        let nar_hash = self.r.string("narHash").await?;
        let references = self.r.strings("references").await?;
        let registration_time = self.r.u64().await?;
        let nar_size = self.r.u64().await?;
        let ultimate = self.r.u64().await? != 0;
        let sigs = self.r.strings("sigs").await?;
        let ca = self.r.string("ca").await?;
        Ok(Some(RawPathInfo {
            deriver,
            nar_hash,
            references,
            registration_time,
            nar_size,
            ultimate,
            sigs,
            ca,
        }))
    }

    /// NarFromPath: reads exactly `nar_size` bytes (from QueryPathInfo).
    pub async fn nar_from_path(&mut self, path: &str, nar_size: u64) -> Result<Vec<u8>> {
        let mut a = WireBuf::default();
        a.str(path);
        self.call(38, &a).await?;
        let mut buf = vec![0u8; nar_size as usize];
        tokio::io::AsyncReadExt::read_exact(self.r.get_mut(), &mut buf).await?;
        Ok(buf)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPathInfo {
    pub deriver: String,
    pub nar_hash: String,
    pub references: Vec<String>,
    pub registration_time: u64,
    pub nar_size: u64,
    pub ultimate: bool,
    pub sigs: Vec<String>,
    pub ca: String,
}
