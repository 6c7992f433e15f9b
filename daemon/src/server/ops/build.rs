//! Ops that would build or repair: answered when there is nothing to do
//! (the paths are all present; verifying without repair), refused otherwise.

use super::{Acknowledged, Answer, LowerStore, OpError, Serve};
use snix_lower_store_protocol::codec::BuildMode;
use snix_lower_store_protocol::request::*;

impl LowerStore {
    /// Are all these derived paths present, so a build has nothing to do?
    /// `bare_drv`: the request's `bare_drv_means_outputs`.
    async fn nothing_to_build(&self, paths: &[DerivedPath], mode: BuildMode, bare_drv: bool) -> Result<bool, OpError> {
        let mut all_present = mode == BuildMode::NORMAL;
        for t in paths {
            all_present = all_present && self.derived_path_present(t, bare_drv).await?;
        }
        Ok(all_present)
    }
}

impl Serve for EnsurePath {
    type Body = Acknowledged;
    async fn serve(&self, s: &LowerStore) -> Result<Answer<Acknowledged>, OpError> {
        let p = s.path(&self.path)?;
        if !s.backend(s.backend.is_valid(&p).await)? {
            return Err(OpError::CannotEnsure(s.store_dir.display(&p)));
        }
        Ok(Acknowledged.into())
    }
}

impl Serve for BuildPaths {
    type Body = Acknowledged;
    async fn serve(&self, s: &LowerStore) -> Result<Answer<Acknowledged>, OpError> {
        // Nothing to build when every requested path is already present;
        // anything else would need a build or substitution.
        if !s
            .nothing_to_build(&self.paths, self.mode, self.bare_drv_means_outputs)
            .await?
        {
            return Err(OpError::ReadOnly {
                subject: self.paths.first().map(|p| p.to_string()),
            });
        }
        Ok(Acknowledged.into())
    }
}

impl Serve for BuildPathsWithResults {
    type Body = NoReply;
    async fn serve(&self, s: &LowerStore) -> Result<Answer<NoReply>, OpError> {
        // Paths are validated (and looked up) as for BuildPaths, then refused:
        // this op always reports build results, which we have none of.
        s.nothing_to_build(&self.paths, self.mode, self.bare_drv_means_outputs)
            .await?;
        Err(OpError::ReadOnly {
            subject: self.paths.first().map(|p| p.to_string()),
        })
    }
}

impl Serve for VerifyStore {
    type Body = bool;
    async fn serve(&self, s: &LowerStore) -> Result<Answer<bool>, OpError> {
        if self.repair {
            return Err(OpError::NoRepair);
        }
        let entries = s
            .backend
            .all_hashes()
            .await
            .map_err(|source| OpError::Backend { backend: None, source })?;
        // VerifyStore reads every object: keep it off the async threads.
        let (lower, store_dir, check) = (s.lower.clone(), s.store_dir.clone(), self.check_contents);
        let problems = crate::blocking::run(move || crate::verify::verify(&entries, &lower, &store_dir, check)).await;
        let errors = !problems.is_empty();
        Ok(Answer {
            log: problems,
            body: errors,
            nar: None,
        })
    }
}
