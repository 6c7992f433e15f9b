//! Path queries: validity, path infos, NAR hashes, references, referrers,
//! derivers, lookup by hash part. Answered from the backend; an unknown path
//! is "not valid", a failing backend is an error naming it.

use super::{Answer, LowerStore, OpError, Serve};
use snix_lower_store_protocol::codec::{wire_path_info, Shown, UnkeyedValidPathInfo};
use snix_lower_store_protocol::request::*;
use snix_lower_store_types::path_info::PathInfo;

impl LowerStore {
    /// The path info of a valid path, or "not valid".
    async fn valid_info(&self, path: &str) -> Result<PathInfo, OpError> {
        let p = self.path(path)?;
        self.backend(self.backend.path_info(&p).await)?
            .ok_or_else(|| self.not_valid(&p))
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
        let found = if h.len() == 32 && snix_lower_store_types::hash::is_nix32(h) {
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
