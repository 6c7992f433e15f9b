//! What each op answers: one [`Serve`] impl per request type, grouped in one
//! file per op family (the dispatch table that maps op numbers to them is
//! the session's, `server::session`).
//!
//! - [`paths`]: validity, path infos, references, referrers, derivers;
//! - [`derivations`]: derivation outputs, QueryMissing, realisations;
//! - [`substitutes`]: a lower store has none;
//! - [`roots`]: temp/indirect roots, GC sync, FindRoots, OptimiseStore;
//! - [`nar`]: NarFromPath (the NAR itself is streamed by the session);
//! - [`build`]: EnsurePath, BuildPaths, VerifyStore;
//! - [`refused`]: ops that would write, refused after their payload is drained.
//!
//! A handler validates its arguments, asks the [`Backend`] and the lower dir,
//! and returns its reply as data ([`Answer`]) or an [`OpError`]; framing,
//! encoding and error rendering happen once, in `session::serve_op`.

mod build;
mod derivations;
mod nar;
pub mod paths;
mod refused;
mod roots;
mod substitutes;

use std::future::Future;
use std::sync::Arc;

use crate::backend::{Backend, BackendError};
use snix_lower_store_protocol::codec::{Shown, StderrFrame, Wire};
use snix_lower_store_protocol::request::Request;
use snix_lower_store_protocol::wire::WireBuf;
use snix_lower_store_types::derived_path::{DerivedPath, Outputs};
use snix_lower_store_types::lower::LowerDir;
use snix_lower_store_types::{StoreDir, StorePath};

pub use super::error::OpError;

/// The read-only store behind the socket.
pub struct LowerStore {
    /// The metadata: the embedded index or a snix PathInfoService.
    pub backend: Arc<dyn Backend>,
    /// The objects.
    pub lower: LowerDir,
    /// The logical store directory paths are shown under.
    pub store_dir: StoreDir,
}

/// A successful answer: log lines (STDERR_NEXT), then the reply after
/// STDERR_LAST, then (NarFromPath only) the NAR of `nar`, which the session
/// streams from the lower dir.
pub struct Answer<T> {
    pub log: Vec<String>,
    pub body: T,
    pub nar: Option<StorePath>,
}

impl<T> From<T> for Answer<T> {
    fn from(body: T) -> Self {
        Answer {
            log: Vec::new(),
            body,
            nar: None,
        }
    }
}

/// The reply of an op that has nothing to report: the integer 1. Nix's
/// daemon writes `1` after AddTempRoot, AddIndirectRoot, SyncWithGC,
/// OptimiseStore, EnsurePath and BuildPaths, and its client reads the
/// integer and ignores it (`readInt`); the value is kept for clients that
/// check it. Same layout as those ops' `Reply` (`u64`); decoding anything
/// but 1 is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acknowledged;

impl Wire for Acknowledged {
    fn encode(&self, out: &mut WireBuf) {
        1u64.encode(out);
    }
    async fn decode<R: tokio::io::AsyncRead + Unpin + Send>(
        r: &mut snix_lower_store_protocol::wire::WireReader<R>,
    ) -> Result<Self, snix_lower_store_protocol::wire::ProtocolError> {
        match u64::decode(r).await? {
            1 => Ok(Acknowledged),
            n => Err(snix_lower_store_protocol::wire::ProtocolError::Malformed(format!(
                "an acknowledgement is the integer 1, not {n}"
            ))),
        }
    }
}

/// What an op answers, given its decoded request. Implemented for every
/// request type; public so benches can answer typed requests.
pub trait Serve: Request + Sync {
    /// What the handler answers: `Self::Reply`, or a type with the same
    /// layout that is cheaper to build (QueryPathInfo's [`Shown`] paths).
    /// The ops tests and the `session` fuzz target decode every answer with
    /// `Self::Reply`.
    ///
    /// [`Shown`]: snix_lower_store_protocol::codec::Shown
    type Body: Wire;
    fn serve<'a>(
        &'a self,
        store: &'a LowerStore,
    ) -> impl Future<Output = Result<Answer<Self::Body>, OpError>> + Send + 'a;
}

impl LowerStore {
    /// Answer `q` as the session does and append, at `out`'s version, what
    /// is sent before any NAR: STDERR_NEXT per log line, STDERR_LAST and the
    /// reply, or STDERR_ERROR. Returns the path whose NAR follows (NarFromPath), or
    /// the op's error, already encoded in `out`. A lower dir that is gone is
    /// never answered for.
    pub async fn answer<Q: Serve>(&self, q: &Q, out: &mut WireBuf) -> Result<Option<StorePath>, OpError> {
        let answer = match self.lower.check_alive() {
            Err(why) => Err(OpError::LowerGone(why)),
            Ok(()) => q.serve(self).await,
        };
        match answer {
            Ok(a) => {
                for line in &a.log {
                    StderrFrame::log(line).encode(out);
                }
                StderrFrame::Last.encode(out);
                a.body.encode(out);
                Ok(a.nar)
            }
            Err(e) => {
                StderrFrame::error(e.render(Q::OP)).encode(out);
                Err(e)
            }
        }
    }

    /// A store path argument, validated.
    pub(crate) fn path(&self, s: &str) -> Result<StorePath, OpError> {
        Ok(self.store_dir.parse(s)?)
    }

    pub(crate) fn paths(&self, v: &[String]) -> Result<Vec<StorePath>, OpError> {
        v.iter().map(|s| self.path(s)).collect()
    }

    /// A backend answer, its failure naming the backend.
    pub(crate) fn backend<T>(&self, r: Result<T, BackendError>) -> Result<T, OpError> {
        r.map_err(|source| OpError::Backend {
            backend: Some(self.backend.describe()),
            source,
        })
    }

    pub(crate) fn not_valid(&self, p: &StorePath) -> OpError {
        OpError::NotValid(self.store_dir.display(p))
    }

    /// Paths as they go on the wire, shown under the store dir.
    pub(crate) fn shown(&self, paths: Vec<StorePath>) -> Vec<Shown> {
        paths
            .into_iter()
            .map(|path| Shown {
                dir: self.store_dir.clone(),
                path,
            })
            .collect()
    }

    pub(crate) fn display_opt(&self, p: Option<&StorePath>) -> Option<String> {
        p.map(|p| self.store_dir.display(p))
    }

    /// Is a derived path (`/nix/store/x`, `/nix/store/x.drv!out,dev`, `…!*`)
    /// already present: the path valid, or every wanted output valid?
    /// With `bare_drv_means_outputs` (clients below 1.30, as Nix's daemon
    /// reads them) a bare `.drv` path wants all its outputs, like `…!*`;
    /// otherwise a bare path is the path itself.
    pub(crate) async fn derived_path_present(
        &self,
        t: &DerivedPath,
        bare_drv_means_outputs: bool,
    ) -> Result<bool, OpError> {
        let p = self.path(t.path())?;
        let wanted = match t.outputs() {
            Some(o) => o,
            None if bare_drv_means_outputs && p.is_derivation() => Outputs::ALL,
            None => return self.backend(self.backend.is_valid(&p).await),
        };
        let Some(outs) = self.backend(self.backend.derivation_outputs(&p).await)? else {
            return Ok(false);
        };
        for (name, path) in &outs {
            if wanted.wants(name) {
                match path {
                    Some(path) if self.backend(self.backend.is_valid(path).await)? => {}
                    _ => return Ok(false),
                }
            }
        }
        // An output name the derivation does not have is not present either.
        Ok(wanted.names().all(|w| w == "*" || outs.iter().any(|(n, _)| n == w)))
    }
}
