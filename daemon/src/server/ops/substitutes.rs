//! Substitution queries. A lower store has no substituters: every answer is
//! empty, after the path arguments are validated like Nix does.

use super::{Answer, LowerStore, OpError, Serve};
use snix_lower_store_protocol::request::*;

impl Serve for HasSubstitutes {
    type Body = bool;
    async fn serve(&self, s: &LowerStore) -> Result<Answer<bool>, OpError> {
        s.path(&self.path)?;
        Ok(false.into())
    }
}

impl Serve for QuerySubstitutablePaths {
    type Body = Vec<String>;
    async fn serve(&self, s: &LowerStore) -> Result<Answer<Vec<String>>, OpError> {
        s.paths(&self.paths)?;
        Ok(Vec::new().into())
    }
}

impl Serve for QuerySubstitutablePathInfos {
    type Body = SubstitutablePathInfos;
    async fn serve(&self, s: &LowerStore) -> Result<Answer<SubstitutablePathInfos>, OpError> {
        for (p, _) in &self.paths {
            s.path(p)?;
        }
        Ok(SubstitutablePathInfos::default().into())
    }
}

impl Serve for QuerySubstitutablePathInfo {
    type Body = Option<SubstitutablePathInfo>;
    async fn serve(&self, s: &LowerStore) -> Result<Answer<Option<SubstitutablePathInfo>>, OpError> {
        s.path(&self.path)?;
        Ok(None.into())
    }
}
