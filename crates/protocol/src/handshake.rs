//! Opening a connection: magic numbers, version negotiation, the feature-set
//! exchange (1.38+), the obsolete client words, and the daemon's version and
//! trust answer, ending with the first STDERR_LAST. The layouts are the
//! handshake types of `codec`, shared with the test client.

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::codec::{
    ClientMagic, ClientObsolete, ClientVersion, Features, ServerHello, ServerInfo, StderrFrame, TrustedFlag, Wire,
};
use super::wire::{ProtocolError, WireBuf, WireReader};
use super::{ProtoVersion, WORKER_MAGIC_1};

/// What the handshake settled.
#[derive(Debug, Clone)]
pub struct Negotiated {
    pub version: ProtoVersion,
    /// Features both sides have (always empty while we advertise none).
    pub features: Vec<String>,
    /// The client's own version word, for logs.
    pub client_version: u64,
}

/// Protocol features we implement beyond the version number. We advertise
/// none: the ones Nix defines change write ops or realisation encodings this
/// read-only store does not serve.
pub const FEATURES: &[&str] = &[];

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("not a Nix client: first word {0:#x}, expected {WORKER_MAGIC_1:#x}")]
    BadMagic(u64),
    #[error("client protocol {}.{} has another major version than 1", .0 >> 8, .0 & 0xff)]
    BadMajor(u64),
    #[error("client protocol {0} is older than the oldest supported, {min}; upgrade Nix to 2.3 or newer", min = ProtoVersion::MINIMUM)]
    TooOld(ProtoVersion),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

/// Write `values` and flush.
async fn send<W: AsyncWrite + Unpin>(w: &mut W, out: &WireBuf) -> Result<(), ProtocolError> {
    w.write_all(&out.0).await?;
    w.flush().await?;
    Ok(())
}

/// Run the server side of the handshake. On success `r` is set to the
/// negotiated version.
pub async fn serve_handshake<R, W>(
    r: &mut WireReader<R>,
    w: &mut W,
    daemon_version: &str,
    trusted: bool,
) -> Result<Negotiated, HandshakeError>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin,
{
    let latest = ProtoVersion::LATEST;
    r.set_version(latest);
    let ClientMagic(magic) = ClientMagic::decode(r).await?;
    if magic != WORKER_MAGIC_1 {
        return Err(HandshakeError::BadMagic(magic));
    }
    let mut out = WireBuf::new(latest);
    ServerHello {
        version: latest.to_wire(),
    }
    .encode(&mut out);
    send(w, &out).await?;

    let ClientVersion(client_version) = ClientVersion::decode(r).await?;
    if client_version >> 8 != 1 {
        return Err(HandshakeError::BadMajor(client_version));
    }
    let version = ProtoVersion((client_version & 0xff) as u8).min(latest);
    // From here on the reader speaks the negotiated version.
    r.set_version(version);

    let mut features = Vec::new();
    if version.at_least(38) {
        let Features(client_features) = Features::decode(r).await?;
        let mut out = WireBuf::new(version);
        Features(FEATURES.iter().map(|f| f.to_string()).collect()).encode(&mut out);
        send(w, &out).await?;
        features = client_features
            .into_iter()
            .filter(|f| FEATURES.contains(&f.as_str()))
            .collect();
    }

    ClientObsolete::decode(r).await?;

    let mut out = WireBuf::new(version);
    if version < ProtoVersion::MINIMUM {
        // The client now reads STDERR messages: tell it why we stop.
        StderrFrame::error(HandshakeError::TooOld(version).to_string()).encode(&mut out);
        let _ = send(w, &out).await;
        return Err(HandshakeError::TooOld(version));
    }
    let trust = if trusted {
        TrustedFlag::Trusted
    } else {
        TrustedFlag::NotTrusted
    };
    ServerInfo {
        daemon_version: Some(daemon_version.to_owned()),
        trust: Some(trust),
    }
    .encode(&mut out);
    StderrFrame::Last.encode(&mut out);
    send(w, &out).await?;
    Ok(Negotiated {
        version,
        features,
        client_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Limits;

    /// What a client offering 1.`minor` sends (no features: below 1.38).
    fn client_hello(minor: u8) -> Vec<u8> {
        let mut b = WireBuf::default();
        b.u64(WORKER_MAGIC_1).u64(ProtoVersion(minor).to_wire());
        b.u64(0).u64(0); // no CPU affinity, no reserveSpace
        b.0
    }

    /// The handshake leaves the reader at the negotiated version, so the
    /// session reads requests in that layout without being told.
    #[tokio::test]
    async fn the_reader_leaves_at_the_negotiated_version() {
        for minor in [21u8, 30, 37] {
            let mut r = WireReader::new(std::io::Cursor::new(client_hello(minor)), Limits::default());
            let neg = serve_handshake(&mut r, &mut tokio::io::sink(), "t", false)
                .await
                .unwrap();
            assert_eq!(neg.version, ProtoVersion(minor));
            assert_eq!(
                r.version(),
                ProtoVersion(minor),
                "the reader after a 1.{minor} handshake"
            );
        }
    }
}
