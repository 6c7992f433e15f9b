//! Path queries: validity, path infos, NAR hashes, references, referrers,
//! derivers, lookup by hash part. Answered from the backend; an unknown path
//! is "not valid", a failing backend is an error naming it.

use super::{Answer, LowerStore, OpError, Serve};
use crate::index::PathInfo;
use crate::protocol::codec::UnkeyedValidPathInfo;
use crate::protocol::request::*;
use crate::store::StoreDir;

impl LowerStore {
    /// The path info of a valid path, or "not valid".
    async fn valid_info(&self, path: &str) -> Result<PathInfo, OpError> {
        let p = self.path(path)?;
        self.backend(self.backend.path_info(&p).await)?
            .ok_or_else(|| self.not_valid(&p))
    }
}

/// Nix's `UnkeyedValidPathInfo` of a backend's path info, paths shown under
/// `sd` (public for the codec benchmark, which measures this and the
/// encoding together, as QueryPathInfo does them).
pub fn wire_path_info(sd: &StoreDir, info: PathInfo) -> UnkeyedValidPathInfo {
    UnkeyedValidPathInfo {
        deriver: info.deriver.as_ref().map(|d| sd.display(d)),
        nar_hash: info.nar_hash.to_base16(),
        references: info.references.iter().map(|r| sd.display(r)).collect(),
        registration_time: info.registration_time,
        nar_size: info.nar_size,
        ultimate: info.ultimate,
        sigs: info.sigs,
        ca: info.ca,
    }
}

impl Serve for IsValidPath {
    async fn serve(&self, s: &LowerStore) -> Result<Answer<bool>, OpError> {
        let p = s.path(&self.path)?;
        Ok(s.backend(s.backend.is_valid(&p).await)?.into())
    }
}

impl Serve for QueryValidPaths {
    async fn serve(&self, s: &LowerStore) -> Result<Answer<Vec<String>>, OpError> {
        // `substitute` is ignored: a lower store substitutes nothing.
        let paths = s.paths(&self.paths)?;
        let mut valid = s.backend(s.backend.valid_subset(&paths).await)?;
        valid.sort();
        valid.dedup();
        Ok(s.display_all(&valid).into())
    }
}

impl Serve for QueryAllValidPaths {
    async fn serve(&self, s: &LowerStore) -> Result<Answer<Vec<String>>, OpError> {
        let all = s.backend(s.backend.all_paths().await)?;
        Ok(s.display_all(&all).into())
    }
}

impl Serve for QueryPathInfo {
    async fn serve(&self, s: &LowerStore) -> Result<Answer<Option<UnkeyedValidPathInfo>>, OpError> {
        let p = s.path(&self.path)?;
        let info = s.backend(s.backend.path_info(&p).await)?;
        Ok(info.map(|i| wire_path_info(&s.store_dir, i)).into())
    }
}

impl Serve for QueryPathHash {
    async fn serve(&self, s: &LowerStore) -> Result<Answer<String>, OpError> {
        Ok(s.valid_info(&self.path).await?.nar_hash.to_base16().into())
    }
}

impl Serve for QueryReferences {
    async fn serve(&self, s: &LowerStore) -> Result<Answer<Vec<String>>, OpError> {
        Ok(s.display_all(&s.valid_info(&self.path).await?.references).into())
    }
}

impl Serve for QueryDeriver {
    async fn serve(&self, s: &LowerStore) -> Result<Answer<Option<String>>, OpError> {
        let info = s.valid_info(&self.path).await?;
        Ok(s.display_opt(info.deriver.as_ref()).into())
    }
}

impl Serve for QueryPathFromHashPart {
    async fn serve(&self, s: &LowerStore) -> Result<Answer<Option<String>>, OpError> {
        // An invalid hash part simply matches nothing, as in Nix.
        let h = &self.hash_part;
        let found = if h.len() == 32 && crate::store::hash::is_nix32(h) {
            s.backend(s.backend.path_from_hash_part(h).await)?
        } else {
            None
        };
        Ok(s.display_opt(found.as_ref()).into())
    }
}

impl Serve for QueryReferrers {
    async fn serve(&self, s: &LowerStore) -> Result<Answer<Vec<String>>, OpError> {
        let p = s.path(&self.path)?;
        Ok(s.display_all(&s.backend(s.backend.referrers(&p).await)?).into())
    }
}

impl Serve for QueryValidDerivers {
    async fn serve(&self, s: &LowerStore) -> Result<Answer<Vec<String>>, OpError> {
        let p = s.path(&self.path)?;
        Ok(s.display_all(&s.backend(s.backend.valid_derivers(&p).await)?).into())
    }
}
