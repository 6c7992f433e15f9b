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
use snix_lower_store_protocol::handshake::HandshakeError;
use snix_lower_store_protocol::request::Op;
use snix_lower_store_protocol::wire::ProtocolError;
use snix_lower_store_types::lower::LowerError;
use snix_lower_store_types::path::{shown, StorePathError};

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
    /// An obsolete op no Nix client sends any more (ExportPath); `instead`
    /// names the op Nix clients use.
    Obsolete {
        subject: Option<String>,
        instead: &'static str,
    },
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
            OpError::ReadOnly { subject } => format!(
                "{op}{}: the lower store is read-only; it answers queries only, so add, build or delete in the upper (local-overlay) store instead",
                about(subject)
            ),
            OpError::Obsolete { subject, instead } => {
                format!("{op}{}: this obsolete op is not served; Nix clients use {instead}", about(subject))
            }
        }
    }
}

/// ` ('<subject>')`, escaped and bounded, or nothing.
fn about(subject: &Option<String>) -> String {
    subject
        .as_deref()
        .map(|s| format!(" ('{}')", shown(s)))
        .unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts the end-to-end suite compares; a change here is a change
    /// of behaviour.
    #[test]
    fn rendered_texts_are_unchanged() {
        let p = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x".to_string();
        assert_eq!(
            OpError::NotValid(p.clone()).render(Op::QueryPathHash),
            format!("QueryPathHash: path '{p}' is not valid in the lower store")
        );
        assert_eq!(
            OpError::ReadOnly {
                subject: Some(p.clone())
            }
            .render(Op::AddToStore),
            format!(
                "AddToStore ('{p}'): the lower store is read-only; it answers queries only, so add, build or delete in the upper (local-overlay) store instead"
            )
        );
        assert_eq!(
            OpError::Obsolete {
                subject: None,
                instead: "NarFromPath"
            }
            .render(Op::ExportPath),
            "ExportPath: this obsolete op is not served; Nix clients use NarFromPath"
        );
        assert_eq!(
            OpError::NoRepair.render(Op::VerifyStore),
            "VerifyStore: repair is impossible: the lower store is read-only; verify without --repair, and fix the lower store where it is built"
        );
        assert_eq!(
            OpError::CannotEnsure(p.clone()).render(Op::EnsurePath),
            format!("EnsurePath: path '{p}' is not in the lower store, and the lower store is read-only: it cannot build or substitute it")
        );
        assert_eq!(
            OpError::NoPermRoot { gc_root: "/r".into() }.render(Op::AddPermRoot),
            "AddPermRoot: the lower store is read-only and keeps every path, so it creates no root at '/r'; create the root on the client side (nix-store --add-root does this without the daemon)"
        );
        let e = SessionError::UnknownOp(999);
        assert!(!e.can_recover() && e.tell_client());
        assert_eq!(
            e.to_string(),
            "unknown worker op 999; this connection is closed (snix-lower-store speaks protocol 1.21 to 1.38)"
        );
        let e = SessionError::Op {
            op: Op::IsValidPath,
            error: OpError::NoRepair,
        };
        assert!(e.can_recover());
        assert!(!SessionError::HungUp(Op::IsValidPath).tell_client());
    }
}
