//! Root and GC ops. The lower store is never garbage collected, so every
//! path is always kept: temporary and indirect roots are accepted without
//! writing anything, a permanent root is refused (it would be a file), and
//! there are no roots to find. Also SetOptions and OptimiseStore, which have
//! nothing to change either.

use super::{Acknowledged, Answer, LowerStore, OpError, Serve};
use snix_lower_store_protocol::request::*;

impl Serve for SetOptions {
    type Body = ();
    async fn serve(&self, _: &LowerStore) -> Result<Answer<()>, OpError> {
        Ok(().into())
    }
}

impl Serve for AddTempRoot {
    type Body = Acknowledged;
    async fn serve(&self, s: &LowerStore) -> Result<Answer<Acknowledged>, OpError> {
        // Lower paths are never collected, so they need no root.
        s.path(&self.path)?;
        Ok(Acknowledged.into())
    }
}

impl Serve for AddIndirectRoot {
    type Body = Acknowledged;
    async fn serve(&self, _: &LowerStore) -> Result<Answer<Acknowledged>, OpError> {
        Ok(Acknowledged.into())
    }
}

impl Serve for SyncWithGC {
    type Body = Acknowledged;
    async fn serve(&self, _: &LowerStore) -> Result<Answer<Acknowledged>, OpError> {
        Ok(Acknowledged.into())
    }
}

impl Serve for AddPermRoot {
    type Body = String;
    async fn serve(&self, s: &LowerStore) -> Result<Answer<String>, OpError> {
        let p = s.path(&self.path)?;
        if !s.backend(s.backend.is_valid(&p).await)? {
            return Err(s.not_valid(&p));
        }
        Err(OpError::NoPermRoot {
            gc_root: self.gc_root.clone(),
        })
    }
}

impl Serve for FindRoots {
    type Body = Roots;
    async fn serve(&self, _: &LowerStore) -> Result<Answer<Roots>, OpError> {
        Ok(Roots::default().into())
    }
}

impl Serve for OptimiseStore {
    type Body = Acknowledged;
    async fn serve(&self, _: &LowerStore) -> Result<Answer<Acknowledged>, OpError> {
        // Nothing to do: the lower store is read-only and optimised (or not)
        // by whoever built it.
        Ok(Acknowledged.into())
    }
}
