//! Derivation queries: output maps, names and paths (from the backend's
//! record of each `.drv`), QueryMissing, and realisations of
//! content-addressed outputs.

use super::{Answer, LowerStore, OpError, Serve};
use snix_lower_store_protocol::codec::Shown;
use snix_lower_store_protocol::codec::{Missing, OutputMap, Realisations, WireRealisation};
use snix_lower_store_protocol::request::*;
use snix_lower_store_types::drv::OutputMap as DrvOutputs;
use snix_lower_store_types::realisation::DrvOutputId;
use snix_lower_store_types::StorePath;

impl LowerStore {
    /// The outputs of a derivation the backend knows, or "not valid".
    async fn outputs(&self, path: &str) -> Result<DrvOutputs, OpError> {
        let p = self.path(path)?;
        self.backend(self.backend.derivation_outputs(&p).await)?
            .ok_or_else(|| self.not_valid(&p))
    }
}

impl Serve for QueryDerivationOutputMap {
    type Body = OutputMap;
    async fn serve(&self, s: &LowerStore) -> Result<Answer<OutputMap>, OpError> {
        let outs = s.outputs(&self.path).await?;
        let map = outs.into_iter().map(|(n, p)| (n, s.display_opt(p.as_ref()))).collect();
        Ok(OutputMap(map).into())
    }
}

impl Serve for QueryDerivationOutputs {
    type Body = Vec<Shown>;
    async fn serve(&self, s: &LowerStore) -> Result<Answer<Self::Body>, OpError> {
        let outs = s.outputs(&self.path).await?;
        let mut paths: Vec<StorePath> = outs.into_iter().filter_map(|(_, p)| p).collect();
        paths.sort();
        Ok(s.shown(paths).into())
    }
}

impl Serve for QueryDerivationOutputNames {
    type Body = Vec<String>;
    async fn serve(&self, s: &LowerStore) -> Result<Answer<Vec<String>>, OpError> {
        let outs = s.outputs(&self.path).await?;
        Ok(outs.into_iter().map(|(n, _)| n).collect::<Vec<_>>().into())
    }
}

impl Serve for QueryMissing {
    type Body = Missing;
    async fn serve(&self, s: &LowerStore) -> Result<Answer<Missing>, OpError> {
        let mut unknown = Vec::new();
        for t in &self.targets {
            if !s.derived_path_present(t, self.bare_drv_means_outputs).await? {
                unknown.push(s.path(t.path())?);
            }
        }
        unknown.sort();
        unknown.dedup();
        Ok(Missing {
            unknown: unknown.iter().map(|p| s.store_dir.display(p)).collect(),
            ..Default::default()
        }
        .into())
    }
}

impl Serve for QueryRealisation {
    type Body = Realisations;
    async fn serve(&self, s: &LowerStore) -> Result<Answer<Realisations>, OpError> {
        // Empty when unknown; the layout (JSON or output path) is the reply type's.
        let id = DrvOutputId::parse(&self.id).map_err(OpError::BadArgument)?;
        let r = s.backend(s.backend.realisation(&id).await)?;
        let set = r
            .map(|r| WireRealisation {
                json: r.to_json(),
                out_path: s.store_dir.display(&r.out_path),
            })
            .into_iter()
            .collect();
        Ok(Realisations(set).into())
    }
}
