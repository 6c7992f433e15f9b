//! Opening a connection: magic numbers, version negotiation, the feature-set
//! exchange (1.38+), the obsolete client words, and the daemon's version and
//! trust answer, ending with the first STDERR_LAST.

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::stderr;
use super::wire::{ProtocolError, WireBuf, WireReader};
use super::{ProtoVersion, WORKER_MAGIC_1, WORKER_MAGIC_2};

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

/// Run the server side of the handshake.
pub async fn serve_handshake<R, W>(
    r: &mut WireReader<R>,
    w: &mut W,
    daemon_version: &str,
    trusted: bool,
) -> Result<Negotiated, HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let magic = r.u64().await?;
    if magic != WORKER_MAGIC_1 {
        return Err(HandshakeError::BadMagic(magic));
    }
    let mut out = WireBuf::default();
    out.u64(WORKER_MAGIC_2).u64(ProtoVersion::LATEST.to_wire());
    w.write_all(&out.0).await.map_err(ProtocolError::from)?;
    w.flush().await.map_err(ProtocolError::from)?;

    let client_version = r.u64().await?;
    if client_version >> 8 != 1 {
        return Err(HandshakeError::BadMajor(client_version));
    }
    let version = ProtoVersion((client_version & 0xff) as u8).min(ProtoVersion::LATEST);

    let mut features = Vec::new();
    if version.at_least(38) {
        let client_features = r.strings("client feature list").await?;
        let mut out = WireBuf::default();
        out.strings(FEATURES.iter().copied());
        w.write_all(&out.0).await.map_err(ProtocolError::from)?;
        w.flush().await.map_err(ProtocolError::from)?;
        features = client_features
            .into_iter()
            .filter(|f| FEATURES.contains(&f.as_str()))
            .collect();
    }

    // Obsolete words the client still sends: CPU affinity and reserveSpace.
    if version.at_least(14) && r.u64().await? != 0 {
        r.u64().await?;
    }
    if version.at_least(11) {
        r.u64().await?;
    }

    let mut out = WireBuf::default();
    if version < ProtoVersion::MINIMUM {
        // The client now reads STDERR messages: tell it why we stop.
        stderr::error(&mut out, version, &HandshakeError::TooOld(version).to_string());
        let _ = w.write_all(&out.0).await;
        let _ = w.flush().await;
        return Err(HandshakeError::TooOld(version));
    }
    if version.at_least(33) {
        out.str(daemon_version);
    }
    if version.at_least(35) {
        out.u64(if trusted { 1 } else { 2 });
    }
    stderr::last(&mut out);
    w.write_all(&out.0).await.map_err(ProtocolError::from)?;
    w.flush().await.map_err(ProtocolError::from)?;
    Ok(Negotiated {
        version,
        features,
        client_version,
    })
}
