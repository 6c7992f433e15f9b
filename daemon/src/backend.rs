//! Where path infos come from: the embedded index (the default) or a snix
//! `PathInfoService` over gRPC. The op handlers ask a [`Backend`] and never
//! care which; a backend that cannot answer says so with an error naming
//! itself, never with "path not valid".
//!
//! Index queries (SQLite): the ones whose cost grows with the store or with
//! the client's request (all paths, all hashes, the count, the valid subset
//! of a list longer than 64 paths) run through `crate::blocking::run`, off
//! the async threads. Point lookups by primary key (one path, one hash part,
//! one realisation, a short list) run inline: they take a few microseconds
//! on the index's read connections, and moving them costs more than they do.
//! Measured with `snix-lower-store-bench` and `bench/benches/blocking.rs`
//! (the figures: docs/src/performance.md, "Figures behind design choices").

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::grpc::client::GrpcBackend;
use snix_lower_store_index::{IndexError, PathInfo, PathInfoIndex};
use snix_lower_store_types::drv::OutputMap;
use snix_lower_store_types::realisation::{DrvOutputId, Realisation};
use snix_lower_store_types::{NarHash, StorePath};

/// Why a backend could not answer.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Grpc(#[from] crate::grpc::GrpcError),
}

pub type Result<T> = std::result::Result<T, BackendError>;

/// A boxed future borrowing the backend.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The questions the op handlers ask about the lower store's metadata.
///
/// Used as `Arc<dyn Backend>` with boxed futures rather than as a generic
/// parameter: the backend is chosen at run time (a command-line flag), and a
/// generic would spread a type parameter through `LowerStore`, `Server`, the
/// tests and the fuzz targets for one allocation per call, which is noise
/// next to a SQLite query or a gRPC round trip.
pub trait Backend: Send + Sync {
    /// For logs, STATUS and error messages: which backend, where.
    fn describe(&self) -> String;
    fn is_valid<'a>(&'a self, p: &'a StorePath) -> BoxFuture<'a, Result<bool>>;
    /// The subset of `paths` that is valid, in the order given.
    fn valid_subset<'a>(&'a self, paths: &'a [StorePath]) -> BoxFuture<'a, Result<Vec<StorePath>>>;
    fn path_info<'a>(&'a self, p: &'a StorePath) -> BoxFuture<'a, Result<Option<PathInfo>>>;
    fn referrers<'a>(&'a self, p: &'a StorePath) -> BoxFuture<'a, Result<Vec<StorePath>>>;
    fn valid_derivers<'a>(&'a self, p: &'a StorePath) -> BoxFuture<'a, Result<Vec<StorePath>>>;
    fn derivation_outputs<'a>(&'a self, drv: &'a StorePath) -> BoxFuture<'a, Result<Option<OutputMap>>>;
    /// The realisation of a content-addressed derivation output.
    fn realisation<'a>(&'a self, id: &'a DrvOutputId) -> BoxFuture<'a, Result<Option<Realisation>>>;
    fn path_from_hash_part<'a>(&'a self, hash_part: &'a str) -> BoxFuture<'a, Result<Option<StorePath>>>;
    fn all_paths(&self) -> BoxFuture<'_, Result<Vec<StorePath>>>;
    fn all_hashes(&self) -> BoxFuture<'_, Result<Vec<(StorePath, NarHash, u64)>>>;
    /// Number of known paths (for STATUS).
    fn count(&self) -> BoxFuture<'_, Result<u64>>;
    /// Extra words for STATUS (the gRPC snapshot's size and age; the
    /// index's key directory).
    fn status_detail(&self) -> Option<String> {
        None
    }
}

/// The embedded index as a backend.
pub fn index(index: PathInfoIndex) -> Arc<dyn Backend> {
    Arc::new(index)
}

/// A snix PathInfoService as a backend.
pub fn grpc(g: GrpcBackend) -> Arc<dyn Backend> {
    Arc::new(g)
}

/// Longest QueryValidPaths list answered with inline lookups.
const INLINE_BATCH: usize = 64;

/// Run one point lookup of the index on the calling thread.
fn lookup<'a, T: Send + 'a>(
    index: &PathInfoIndex,
    f: impl FnOnce(&PathInfoIndex) -> std::result::Result<T, IndexError>,
) -> BoxFuture<'a, Result<T>> {
    let r = f(index).map_err(BackendError::from);
    Box::pin(std::future::ready(r))
}

/// Run one index query on the blocking pool.
fn query<T, F>(index: &PathInfoIndex, f: F) -> BoxFuture<'static, Result<T>>
where
    T: Send + 'static,
    F: FnOnce(&PathInfoIndex) -> std::result::Result<T, IndexError> + Send + 'static,
{
    let index = index.clone();
    Box::pin(async move { Ok(crate::blocking::run(move || f(&index)).await?) })
}

/// The embedded index. A query that moves to the blocking pool takes a
/// clone of the handle (it shares the connection pool and key directory);
/// the pool makes concurrent queries safe.
impl Backend for PathInfoIndex {
    fn describe(&self) -> String {
        format!("index {}", self.db_path().display())
    }
    fn is_valid<'a>(&'a self, p: &'a StorePath) -> BoxFuture<'a, Result<bool>> {
        lookup(self, |i| i.is_valid(p))
    }
    fn valid_subset<'a>(&'a self, paths: &'a [StorePath]) -> BoxFuture<'a, Result<Vec<StorePath>>> {
        // A batch like Nix's (tens of paths) is a handful of point lookups;
        // a client's long list goes to the blocking pool.
        if paths.len() <= INLINE_BATCH {
            return lookup(self, |i| i.valid_subset(paths));
        }
        let paths = paths.to_vec();
        query(self, move |i| i.valid_subset(&paths))
    }
    fn path_info<'a>(&'a self, p: &'a StorePath) -> BoxFuture<'a, Result<Option<PathInfo>>> {
        lookup(self, |i| i.path_info(p))
    }
    fn referrers<'a>(&'a self, p: &'a StorePath) -> BoxFuture<'a, Result<Vec<StorePath>>> {
        lookup(self, |i| i.referrers(p))
    }
    fn valid_derivers<'a>(&'a self, p: &'a StorePath) -> BoxFuture<'a, Result<Vec<StorePath>>> {
        lookup(self, |i| i.valid_derivers(p))
    }
    fn derivation_outputs<'a>(&'a self, drv: &'a StorePath) -> BoxFuture<'a, Result<Option<OutputMap>>> {
        lookup(self, |i| i.derivation_outputs(drv))
    }
    fn realisation<'a>(&'a self, id: &'a DrvOutputId) -> BoxFuture<'a, Result<Option<Realisation>>> {
        lookup(self, |i| i.realisation(id))
    }
    fn path_from_hash_part<'a>(&'a self, hash_part: &'a str) -> BoxFuture<'a, Result<Option<StorePath>>> {
        lookup(self, |i| i.path_from_hash_part(hash_part))
    }
    fn all_paths(&self) -> BoxFuture<'_, Result<Vec<StorePath>>> {
        query(self, |i| i.all_paths())
    }
    fn all_hashes(&self) -> BoxFuture<'_, Result<Vec<(StorePath, NarHash, u64)>>> {
        query(self, |i| i.all_hashes())
    }
    fn count(&self) -> BoxFuture<'_, Result<u64>> {
        query(self, |i| i.count())
    }
    /// The key directory: its size, builds and failures, and how many
    /// reader snapshots it answered (or "key directory off").
    fn status_detail(&self) -> Option<String> {
        Some(self.key_directory_stats().to_string())
    }
}

/// A snix PathInfoService. It holds no realisations, so through gRPC every
/// content-addressed derivation output is unknown.
impl Backend for GrpcBackend {
    fn describe(&self) -> String {
        format!("snix PathInfoService {}", self.address())
    }
    fn is_valid<'a>(&'a self, p: &'a StorePath) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move { Ok(GrpcBackend::path_info(self, p).await?.is_some()) })
    }
    fn valid_subset<'a>(&'a self, paths: &'a [StorePath]) -> BoxFuture<'a, Result<Vec<StorePath>>> {
        Box::pin(async move { Ok(GrpcBackend::valid_subset(self, paths).await?) })
    }
    fn path_info<'a>(&'a self, p: &'a StorePath) -> BoxFuture<'a, Result<Option<PathInfo>>> {
        Box::pin(async move { Ok(GrpcBackend::path_info(self, p).await?) })
    }
    fn referrers<'a>(&'a self, p: &'a StorePath) -> BoxFuture<'a, Result<Vec<StorePath>>> {
        Box::pin(async move { Ok(GrpcBackend::referrers(self, p).await?) })
    }
    fn valid_derivers<'a>(&'a self, p: &'a StorePath) -> BoxFuture<'a, Result<Vec<StorePath>>> {
        Box::pin(async move { Ok(GrpcBackend::valid_derivers(self, p).await?) })
    }
    fn derivation_outputs<'a>(&'a self, drv: &'a StorePath) -> BoxFuture<'a, Result<Option<OutputMap>>> {
        Box::pin(async move { Ok(GrpcBackend::derivation_outputs(self, drv).await?) })
    }
    fn realisation<'a>(&'a self, _: &'a DrvOutputId) -> BoxFuture<'a, Result<Option<Realisation>>> {
        Box::pin(async { Ok(None) })
    }
    fn path_from_hash_part<'a>(&'a self, hash_part: &'a str) -> BoxFuture<'a, Result<Option<StorePath>>> {
        Box::pin(async move { Ok(GrpcBackend::path_from_hash_part(self, hash_part).await?) })
    }
    fn all_paths(&self) -> BoxFuture<'_, Result<Vec<StorePath>>> {
        Box::pin(async move { Ok(GrpcBackend::all_paths(self).await?) })
    }
    fn all_hashes(&self) -> BoxFuture<'_, Result<Vec<(StorePath, NarHash, u64)>>> {
        Box::pin(async move { Ok(GrpcBackend::all_hashes(self).await?) })
    }
    fn count(&self) -> BoxFuture<'_, Result<u64>> {
        let n = self.snapshot_len();
        Box::pin(async move { Ok(n) })
    }
    fn status_detail(&self) -> Option<String> {
        Some(GrpcBackend::status_detail(self))
    }
}
