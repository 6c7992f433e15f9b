//! The two kinds of errors of a connection.
//!
//! - [`OpError`]: why one op cannot be answered. It is rendered once, by
//!   [`OpError::render`], into the STDERR_ERROR text with the op's name in
//!   front, and the connection stays usable.
//! - [`SessionError`]: why a connection stops (or, for
//!   [`SessionError::Op`], does not). [`SessionError::can_recover`] is the one
//!   place that decides between answering with an error and closing.
//!
//! The rendered texts are part of the behaviour the end-to-end suite checks:
//! change them only on purpose.

use std::time::Duration;

use crate::backend::BackendError;
use crate::lower::LowerError;
use crate::protocol::handshake::HandshakeError;
use crate::protocol::request::Op;
use crate::protocol::wire::ProtocolError;
use crate::store::path::{shown, StorePathError};

/// Why one op cannot be answered.
#[derive(Debug)]
pub enum OpError {
    /// The lower dir is gone or was replaced.
    LowerGone(LowerError),
    /// A path argument is not a store path.
    BadPath(StorePathError),
    /// Another argument does not parse (e.g. a derivation output id).
    BadArgument(String),
    /// The path (full form) is not valid in the lower store.
    NotValid(String),
    /// The metadata backend failed; `backend` names it when known.
    Backend {
        backend: Option<String>,
        source: BackendError,
    },
    /// NarFromPath: the path (full form) is indexed but its object is not usable.
    NotPresent { path: String, why: LowerError },
    /// EnsurePath of a path (full form) the lower store does not have.
    CannotEnsure(String),
    /// AddPermRoot: no root is created at this (client-given) location.
    NoPermRoot { gc_root: String },
    /// VerifyStore with repair.
    NoRepair,
    /// An op that would write or build; the subject is what the client named.
    ReadOnly { subject: Option<String> },
}

impl OpError {
    /// The STDERR_ERROR text for this error in answer to `op`.
    pub fn render(&self, op: Op) -> String {
        let op = op.name();
        match self {
            OpError::LowerGone(e) => format!("{op}: {e}"),
            OpError::BadPath(e) => format!("{op}: {e}"),
            OpError::BadArgument(e) => format!("{op}: {e}"),
            OpError::NotValid(p) => format!("{op}: path '{p}' is not valid in the lower store"),
            OpError::Backend {
                backend: Some(b),
                source,
            } => format!("{op}: the lower store's metadata backend ({b}) failed: {source}"),
            OpError::Backend { backend: None, source } => {
                format!("{op}: the lower store's metadata backend failed: {source}")
            }
            OpError::NotPresent { path, why } => format!("{op}: '{path}' is indexed but {why}"),
            OpError::CannotEnsure(p) => format!(
                "{op}: path '{p}' is not in the lower store, and the lower store is read-only: it cannot build or substitute it"
            ),
            OpError::NoPermRoot { gc_root } => format!(
                "{op}: the lower store is read-only and keeps every path, so it creates no root at '{}'; \
                 create the root on the client side (nix-store --add-root does this without the daemon)",
                shown(gc_root)
            ),
            OpError::NoRepair => format!(
                "{op}: repair is impossible: the lower store is read-only; verify without --repair, \
                 and fix the lower store where it is built"
            ),
            OpError::ReadOnly { subject } => {
                let about = subject.as_deref().map(|s| format!(" ('{}')", shown(s))).unwrap_or_default();
                match op {
                    "ExportPath" => {
                        format!("{op}{about}: this obsolete op is not served; Nix clients use NarFromPath")
                    }
                    _ => format!(
                        "{op}{about}: the lower store is read-only; it answers queries only, so add, build or delete in the upper (local-overlay) store instead"
                    ),
                }
            }
        }
    }
}

impl From<StorePathError> for OpError {
    fn from(e: StorePathError) -> Self {
        OpError::BadPath(e)
    }
}

/// Why a connection ended, or (for [`SessionError::Op`]) why one op failed
/// while the connection goes on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    /// One op was refused; the error was answered and the connection goes on.
    #[error("{}", .error.render(*.op))]
    Op { op: Op, error: OpError },
    #[error("handshake not finished within {0:?} (--handshake-timeout); closed")]
    HandshakeTimeout(Duration),
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    /// Reading the next op word failed (not a clean end of the stream).
    #[error("{0}")]
    Read(ProtocolError),
    #[error("unknown worker op {0}; this connection is closed (snix-lower-store speaks protocol 1.21 to 1.38)")]
    UnknownOp(u64),
    #[error("{}: client hung up mid-request", .0.name())]
    HungUp(Op),
    #[error("{}: malformed request: {source}; this connection is closed", .op.name())]
    Malformed { op: Op, source: ProtocolError },
    #[error("{}: writing the reply: {source}", .op.name())]
    Write { op: Op, source: std::io::Error },
}

impl SessionError {
    /// Does the connection survive this error? Only a refused op leaves the
    /// stream in step; anything else may have left unread or half-written
    /// bytes behind.
    pub(crate) fn can_recover(&self) -> bool {
        matches!(self, SessionError::Op { .. })
    }

    /// Whether the client is told (with STDERR_ERROR) before the connection
    /// closes: it is waiting for a reply it can still read.
    pub(crate) fn tell_client(&self) -> bool {
        matches!(
            self,
            SessionError::Op { .. } | SessionError::UnknownOp(_) | SessionError::Malformed { .. }
        )
    }
}
