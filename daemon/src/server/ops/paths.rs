//! Path queries: validity, path infos, NAR hashes, references, referrers,
//! derivers, lookup by hash part. Answered from the backend; an unknown path
//! is "not valid", a failing backend is an error naming it.

use super::{Answer, LowerStore, OpError, Serve};
use crate::protocol::codec::{Shown, UnkeyedValidPathInfo};
use crate::protocol::request::*;
use crate::store::path_info::PathInfo;
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
pub fn wire_path_info(sd: &StoreDir, info: PathInfo) -> UnkeyedValidPathInfo<Shown> {
    let shown = |path| Shown { dir: sd.clone(), path };
    UnkeyedValidPathInfo {
        deriver: info.deriver.map(shown),
        nar_hash: info.nar_hash.to_base16(),
        references: info.references.into_iter().map(shown).collect(),
        registration_time: info.registration_time,
        nar_size: info.nar_size,
        ultimate: info.ultimate,
        sigs: info.sigs.iter().map(|s| s.to_string()).collect(),
        ca: info.ca.as_ref().map(|c| c.render()),
    }
}

impl Serve for IsValidPath {
    type Body = bool;
    async fn serve(&self, s: &LowerStore) -> Result<Answer<bool>, OpError> {
        let p = s.path(&self.path)?;
        Ok(s.backend(s.backend.is_valid(&p).await)?.into())
    }
}

impl Serve for QueryValidPaths {
    type Body = Vec<Shown>;
    async fn serve(&self, s: &LowerStore) -> Result<Answer<Self::Body>, OpError> {
        // `substitute` is ignored: a lower store substitutes nothing.
        let paths = s.paths(&self.paths)?;
        let mut valid = s.backend(s.backend.valid_subset(&paths).await)?;
        valid.sort();
        valid.dedup();
        Ok(s.shown(valid).into())
    }
}

impl Serve for QueryAllValidPaths {
    type Body = Vec<Shown>;
    async fn serve(&self, s: &LowerStore) -> Result<Answer<Self::Body>, OpError> {
        let all = s.backend(s.backend.all_paths().await)?;
        Ok(s.shown(all).into())
    }
}

impl Serve for QueryPathInfo {
    type Body = Option<UnkeyedValidPathInfo<Shown>>;
    async fn serve(&self, s: &LowerStore) -> Result<Answer<Self::Body>, OpError> {
        let p = s.path(&self.path)?;
        let info = s.backend(s.backend.path_info(&p).await)?;
        Ok(info.map(|i| wire_path_info(&s.store_dir, i)).into())
    }
}

impl Serve for QueryPathHash {
    type Body = String;
    async fn serve(&self, s: &LowerStore) -> Result<Answer<String>, OpError> {
        Ok(s.valid_info(&self.path).await?.nar_hash.to_base16().into())
    }
}

impl Serve for QueryReferences {
    type Body = Vec<Shown>;
    async fn serve(&self, s: &LowerStore) -> Result<Answer<Self::Body>, OpError> {
        Ok(s.shown(s.valid_info(&self.path).await?.references).into())
    }
}

impl Serve for QueryDeriver {
    type Body = Option<String>;
    async fn serve(&self, s: &LowerStore) -> Result<Answer<Option<String>>, OpError> {
        let info = s.valid_info(&self.path).await?;
        Ok(s.display_opt(info.deriver.as_ref()).into())
    }
}

impl Serve for QueryPathFromHashPart {
    type Body = Option<String>;
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
    type Body = Vec<Shown>;
    async fn serve(&self, s: &LowerStore) -> Result<Answer<Self::Body>, OpError> {
        let p = s.path(&self.path)?;
        Ok(s.shown(s.backend(s.backend.referrers(&p).await)?).into())
    }
}

impl Serve for QueryValidDerivers {
    type Body = Vec<Shown>;
    async fn serve(&self, s: &LowerStore) -> Result<Answer<Self::Body>, OpError> {
        let p = s.path(&self.path)?;
        Ok(s.shown(s.backend(s.backend.valid_derivers(&p).await)?).into())
    }
}
