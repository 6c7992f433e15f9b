//! Wire primitives of the worker protocol: little-endian u64 words, byte
//! strings padded to 8 bytes, list lengths, and framed data. Collections
//! are built on these by `codec`'s generic impls.
//!
//! Both ends carry the negotiated [`ProtoVersion`]: a [`WireReader`] and a
//! [`WireBuf`] are created at [`ProtoVersion::LATEST`] (what the handshake
//! speaks before a version is settled) and set to the negotiated version
//! once; layouts that change with the version ask them.
//!
//! Decoding never trusts a length. A kept string longer than
//! [`Limits::max_string`] or a list longer than [`Limits::max_list`] is a
//! [`ProtocolError`] before anything is allocated; payloads we only drain
//! (framed data, refused text) are skipped through a fixed buffer.

use tokio::io::{AsyncRead, AsyncReadExt};

use super::ProtoVersion;

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("connection closed by the client")]
    Eof,
    #[error("I/O error on the client connection: {0}")]
    Io(std::io::Error),
    #[error("{what} of {len} bytes is longer than the limit of {max} bytes")]
    StringTooLong { what: &'static str, len: u64, max: u64 },
    #[error("{what} with {len} entries is longer than the limit of {max} entries")]
    ListTooLong { what: &'static str, len: u64, max: u64 },
    #[error("{what} has non-zero padding")]
    BadPadding { what: &'static str },
    #[error("{what}: expected 0 or 1, got {value}")]
    BadBool { what: &'static str, value: u64 },
    #[error("{0}")]
    Malformed(String),
}

impl From<std::io::Error> for ProtocolError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ProtocolError::Eof
        } else {
            ProtocolError::Io(e)
        }
    }
}

/// Bounds on what one request may make the daemon hold in memory.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest string that is kept (store paths, option values, hash parts).
    pub max_string: u64,
    /// Most entries in one list or map (e.g. paths in one QueryValidPaths).
    pub max_list: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_string: 1 << 20,
            max_list: 1 << 20,
        }
    }
}

/// Buffered reader of wire values from a client, at one protocol version.
pub struct WireReader<R> {
    inner: R,
    pub limits: Limits,
    version: ProtoVersion,
}

/// The protocol pads strings as NARs do; the rule lives with the NAR format
/// at the ground floor (`store::nar::padding`).
pub use snix_lower_store_types::nar::padding;

impl<R: AsyncRead + Unpin> WireReader<R> {
    /// A reader at [`ProtoVersion::LATEST`] until [`Self::set_version`].
    pub fn new(inner: R, limits: Limits) -> Self {
        WireReader {
            inner,
            limits,
            version: ProtoVersion::LATEST,
        }
    }

    /// The same reader at protocol `v`.
    pub fn with_version(mut self, v: ProtoVersion) -> Self {
        self.version = v;
        self
    }

    /// Settle the version (the handshake does, once it is negotiated).
    pub fn set_version(&mut self, v: ProtoVersion) {
        self.version = v;
    }

    /// The protocol version values are read at.
    pub fn version(&self) -> ProtoVersion {
        self.version
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    pub async fn u64(&mut self) -> Result<u64, ProtocolError> {
        Ok(self.inner.read_u64_le().await?)
    }

    /// The one way a boolean is read: 0 or 1, anything else is
    /// [`ProtocolError::BadBool`] naming `what`.
    pub async fn bool(&mut self, what: &'static str) -> Result<bool, ProtocolError> {
        match self.u64().await? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(ProtocolError::BadBool { what, value }),
        }
    }

    async fn read_padding(&mut self, len: u64, what: &'static str) -> Result<(), ProtocolError> {
        let p = padding(len);
        if p > 0 {
            let mut pad = [0u8; 8];
            self.inner.read_exact(&mut pad[..p]).await?;
            if pad[..p].iter().any(|&b| b != 0) {
                return Err(ProtocolError::BadPadding { what });
            }
        }
        Ok(())
    }

    /// A byte string, kept; bounded by `max_string`.
    pub async fn bytes(&mut self, what: &'static str) -> Result<Vec<u8>, ProtocolError> {
        let len = self.u64().await?;
        if len > self.limits.max_string {
            return Err(ProtocolError::StringTooLong {
                what,
                len,
                max: self.limits.max_string,
            });
        }
        let mut buf = vec![0u8; len as usize];
        self.inner.read_exact(&mut buf).await?;
        self.read_padding(len, what).await?;
        Ok(buf)
    }

    /// A string, kept. Invalid UTF-8 is replaced (U+FFFD) rather than refused
    /// here, so the request still decodes completely; store path validation
    /// then rejects it with an error that leaves the connection usable.
    pub async fn string(&mut self, what: &'static str) -> Result<String, ProtocolError> {
        let b = self.bytes(what).await?;
        Ok(match String::from_utf8(b) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// A string whose content we do not need: skipped without allocating.
    pub async fn skip_string(&mut self, what: &'static str) -> Result<u64, ProtocolError> {
        let len = self.u64().await?;
        self.skip_bytes(len).await?;
        self.read_padding(len, what).await?;
        Ok(len)
    }

    async fn skip_bytes(&mut self, mut len: u64) -> Result<(), ProtocolError> {
        let mut buf = [0u8; 8192];
        while len > 0 {
            let n = len.min(buf.len() as u64) as usize;
            self.inner.read_exact(&mut buf[..n]).await?;
            len -= n as u64;
        }
        Ok(())
    }

    /// The length of a list or map, checked against `max_list` before the
    /// caller allocates anything for it.
    pub async fn list_len(&mut self, what: &'static str) -> Result<u64, ProtocolError> {
        let len = self.u64().await?;
        if len > self.limits.max_list {
            return Err(ProtocolError::ListTooLong {
                what,
                len,
                max: self.limits.max_list,
            });
        }
        Ok(len)
    }

    /// Drain framed data (`u64 len, bytes` … terminated by a zero length),
    /// as sent by AddToStore, AddToStoreNar, AddMultipleToStore, AddBuildLog.
    /// Frames are not padded. Returns the number of payload bytes drained.
    pub async fn drain_framed(&mut self) -> Result<u64, ProtocolError> {
        let mut total = 0u64;
        loop {
            let len = self.u64().await?;
            if len == 0 {
                return Ok(total);
            }
            self.skip_bytes(len).await?;
            total = total.saturating_add(len);
        }
    }
}

/// A reply (or, in the test client, a request) being assembled at one
/// protocol version; sent with one write. `.0` is the bytes.
#[derive(Clone)]
pub struct WireBuf(pub Vec<u8>, ProtoVersion);

/// An empty buffer at [`ProtoVersion::LATEST`], for version-independent
/// words (handshake, raw test requests).
impl Default for WireBuf {
    fn default() -> Self {
        WireBuf::new(ProtoVersion::LATEST)
    }
}

impl WireBuf {
    /// An empty buffer for protocol `v`.
    pub fn new(v: ProtoVersion) -> Self {
        WireBuf(Vec::new(), v)
    }

    /// The protocol version values are written at.
    pub fn version(&self) -> ProtoVersion {
        self.1
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u64(v as u64)
    }

    pub fn bytes(&mut self, s: &[u8]) -> &mut Self {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s);
        self.0.resize(self.0.len() + padding(s.len() as u64), 0);
        self
    }

    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }

    /// The string `dir/base` (a store path shown under its store dir),
    /// written without building it first.
    pub fn dir_entry(&mut self, dir: &str, base: &str) -> &mut Self {
        let len = dir.len() + 1 + base.len();
        self.u64(len as u64);
        self.0.reserve(len + 8);
        self.0.extend_from_slice(dir.as_bytes());
        self.0.push(b'/');
        self.0.extend_from_slice(base.as_bytes());
        self.0.resize(self.0.len() + padding(len as u64), 0);
        self
    }

    pub fn strings<'a, I: IntoIterator<Item = &'a str>>(&mut self, items: I) -> &mut Self
    where
        I::IntoIter: ExactSizeIterator,
    {
        let it = items.into_iter();
        self.u64(it.len() as u64);
        for s in it {
            self.str(s);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(b: Vec<u8>) -> WireReader<std::io::Cursor<Vec<u8>>> {
        WireReader::new(
            std::io::Cursor::new(b),
            Limits {
                max_string: 64,
                max_list: 4,
            },
        )
    }

    #[tokio::test]
    async fn string_round_trip_with_padding() {
        let mut w = WireBuf::default();
        w.str("abc").str("").str("12345678");
        assert_eq!(w.0.len(), 8 + 8 + 8 + 8 + 8);
        assert_eq!(&w.0[..11], &[3, 0, 0, 0, 0, 0, 0, 0, b'a', b'b', b'c']);
        let mut r = reader(w.0);
        assert_eq!(r.string("t").await.unwrap(), "abc");
        assert_eq!(r.string("t").await.unwrap(), "");
        assert_eq!(r.string("t").await.unwrap(), "12345678");
        assert!(matches!(r.u64().await, Err(ProtocolError::Eof)));
    }

    #[tokio::test]
    async fn huge_lengths_are_errors_not_allocations() {
        let mut r = reader(u64::MAX.to_le_bytes().to_vec());
        assert!(matches!(
            r.string("path").await,
            Err(ProtocolError::StringTooLong { .. })
        ));
        let mut r = reader(u64::MAX.to_le_bytes().to_vec());
        assert!(matches!(
            r.list_len("paths").await,
            Err(ProtocolError::ListTooLong { .. })
        ));
    }

    #[tokio::test]
    async fn nonzero_padding_is_rejected() {
        let mut b = 1u64.to_le_bytes().to_vec();
        b.extend_from_slice(&[b'x', 0, 0, 1, 0, 0, 0, 0]);
        assert!(matches!(
            reader(b).string("s").await,
            Err(ProtocolError::BadPadding { .. })
        ));
    }

    #[tokio::test]
    async fn framed_data_is_drained_to_the_terminator() {
        let mut w = WireBuf::default();
        w.u64(3);
        w.0.extend_from_slice(b"abc");
        w.u64(1);
        w.0.push(b'd');
        w.u64(0).u64(42);
        let mut r = reader(w.0);
        assert_eq!(r.drain_framed().await.unwrap(), 4);
        assert_eq!(r.u64().await.unwrap(), 42);
    }

    #[tokio::test]
    async fn bool_must_be_zero_or_one() {
        assert!(matches!(
            reader(2u64.to_le_bytes().to_vec()).bool("b").await,
            Err(ProtocolError::BadBool { .. })
        ));
    }
}
