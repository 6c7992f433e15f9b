//! Where path infos come from: the embedded index (the default) or a snix
//! `PathInfoService` over gRPC. The op handlers ask a [`Backend`] and never
//! care which; a backend that cannot answer says so with an error naming
//! itself, never with "path not valid".

use crate::grpc::client::GrpcBackend;
use crate::index::{IndexError, PathInfo, PathInfoIndex};
use crate::store::realisation::{DrvOutputId, Realisation};
use crate::store::{NarHash, StorePath};

pub enum Backend {
    Index(PathInfoIndex),
    Grpc(GrpcBackend),
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Grpc(#[from] crate::grpc::GrpcError),
}

pub type Result<T> = std::result::Result<T, BackendError>;

impl Backend {
    /// For logs and STATUS: which backend, where.
    pub fn describe(&self) -> String {
        match self {
            Backend::Index(i) => format!("index {}", i.db_path().display()),
            Backend::Grpc(g) => format!("snix PathInfoService {}", g.address()),
        }
    }

    pub async fn is_valid(&self, p: &StorePath) -> Result<bool> {
        match self {
            Backend::Index(i) => Ok(i.is_valid(p)?),
            Backend::Grpc(g) => Ok(g.path_info(p).await?.is_some()),
        }
    }

    /// The subset of `paths` that is valid, in the order given.
    pub async fn valid_subset(&self, paths: &[StorePath]) -> Result<Vec<StorePath>> {
        match self {
            Backend::Index(i) => Ok(i.valid_subset(paths)?),
            Backend::Grpc(g) => g.valid_subset(paths).await,
        }
    }

    pub async fn path_info(&self, p: &StorePath) -> Result<Option<PathInfo>> {
        match self {
            Backend::Index(i) => Ok(i.path_info(p)?),
            Backend::Grpc(g) => g.path_info(p).await,
        }
    }

    pub async fn referrers(&self, p: &StorePath) -> Result<Vec<StorePath>> {
        match self {
            Backend::Index(i) => Ok(i.referrers(p)?),
            Backend::Grpc(g) => g.referrers(p).await,
        }
    }

    pub async fn valid_derivers(&self, p: &StorePath) -> Result<Vec<StorePath>> {
        match self {
            Backend::Index(i) => Ok(i.valid_derivers(p)?),
            Backend::Grpc(g) => g.valid_derivers(p).await,
        }
    }

    pub async fn derivation_outputs(&self, drv: &StorePath) -> Result<Option<crate::store::drv::OutputMap>> {
        match self {
            Backend::Index(i) => Ok(i.derivation_outputs(drv)?),
            Backend::Grpc(g) => g.derivation_outputs(drv).await,
        }
    }

    /// The realisation of a content-addressed derivation output. A snix
    /// PathInfoService holds none, so through gRPC every output is unknown.
    pub async fn realisation(&self, id: &DrvOutputId) -> Result<Option<Realisation>> {
        match self {
            Backend::Index(i) => Ok(i.realisation(id)?),
            Backend::Grpc(_) => Ok(None),
        }
    }

    pub async fn path_from_hash_part(&self, hash_part: &str) -> Result<Option<StorePath>> {
        match self {
            Backend::Index(i) => Ok(i.path_from_hash_part(hash_part)?),
            Backend::Grpc(g) => g.path_from_hash_part(hash_part).await,
        }
    }

    pub async fn all_paths(&self) -> Result<Vec<StorePath>> {
        match self {
            Backend::Index(i) => Ok(i.all_paths()?),
            Backend::Grpc(g) => g.all_paths().await,
        }
    }

    pub async fn all_hashes(&self) -> Result<Vec<(StorePath, NarHash, u64)>> {
        match self {
            Backend::Index(i) => Ok(i.all_hashes()?),
            Backend::Grpc(g) => g.all_hashes().await,
        }
    }

    /// Number of known paths (for STATUS).
    pub async fn count(&self) -> Result<u64> {
        match self {
            Backend::Index(i) => Ok(i.count()?),
            Backend::Grpc(g) => Ok(g.snapshot_len()),
        }
    }

    /// Extra words for STATUS (the gRPC snapshot's size and age).
    pub fn status_detail(&self) -> Option<String> {
        match self {
            Backend::Index(_) => None,
            Backend::Grpc(g) => Some(g.status_detail()),
        }
    }
}
