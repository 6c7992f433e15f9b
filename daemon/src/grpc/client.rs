//! A backend that reads path infos from a snix `PathInfoService`.
//!
//! Validity and path infos come from `Get` by digest, every time: the service
//! is the authority. The service has no call for referrers or derivers, so a
//! snapshot built from `List` answers those; it is rebuilt on an interval and
//! when asked about a path it does not know. A service we cannot reach is an
//! error naming it, never "path not valid". Calls have deadlines; the channel
//! reconnects by itself, and the refresh loop backs off while it is down.
//!
//! Deriver names are read tolerantly (`convert::from_snix`); the one
//! ambiguous name, `x.drv` that may be a recursive-Nix `x.drv.drv` stored
//! without its last ".drv", is settled by the snapshot: the reading the
//! backend holds wins, else `x.drv`.
//!
//! A path info without a `ca` whose store path proves one (snix-store's
//! `copy` drops every `ca`) gets it as `import` would (`store::ca_proof`):
//! from the NAR hash on the calling thread, from a small file's contents
//! through `blocking::run`. Definite results (proved, or nothing to prove)
//! are kept per path and NAR hash (bounded), so a text path's file is read
//! once, not per query; a read that failed is not kept, so a transient I/O
//! error or an object not there yet hides no `ca` beyond that query.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint, Uri};

use super::convert::{from_snix, recursive_nix_alternative};
use super::error::{DrvOutputsError, GrpcError};
use super::proto::store::path_info_service_client::PathInfoServiceClient;
use super::proto::store::{get_path_info_request, GetPathInfoRequest, ListPathInfoRequest};
use super::Address;
use snix_lower_store_types::ca_proof::{self, CaProofOptions, Claim, Proof};
use snix_lower_store_types::content_address::ContentAddress;
use snix_lower_store_types::hash::nix32_decode_vec;
use snix_lower_store_types::lower::LowerDir;
use snix_lower_store_types::path_info::PathInfo;
use snix_lower_store_types::{NarHash, StoreDir, StorePath};

/// What this backend's calls give: its own error, which `backend` wraps.
type Result<T> = std::result::Result<T, GrpcError>;

/// Reverse lookups, from the last complete List.
#[derive(Default)]
struct Snapshot {
    known: HashSet<StorePath>,
    referrers: HashMap<StorePath, Vec<StorePath>>,
    derivers: HashMap<StorePath, Vec<StorePath>>,
    hashes: Vec<(StorePath, NarHash, u64)>,
    built: Option<Instant>,
}

struct Inner {
    address: String,
    client: PathInfoServiceClient<Channel>,
    deadline: Duration,
    lower: LowerDir,
    store_dir: StoreDir,
    snapshot: RwLock<Arc<Snapshot>>,
    refresh_lock: tokio::sync::Mutex<()>,
    last_attempt: Mutex<Option<Instant>>,
    last_error: Mutex<Option<String>>,
    /// Parsed outputs of derivations, which never change.
    drv_outputs: Mutex<HashMap<StorePath, snix_lower_store_types::drv::OutputMap>>,
    /// Which content addresses are proven for path infos that have none.
    ca_proof: CaProofOptions,
    /// Definite proofs already made: path -> (the NAR hash proven for, its
    /// `ca`, `None` for a definite no). Undecided ones are not kept.
    proven: Mutex<HashMap<StorePath, (NarHash, Option<ContentAddress>)>>,
}

/// Most proofs kept; past it the cache starts again (a proof is cheap to
/// redo, the bound only keeps memory flat on a store of millions of paths).
const MAX_PROVEN: usize = 1 << 16;

/// The deriver `d` as read, or its recursive-Nix reading `d.drv` when only
/// that one is among the `known` paths (they share the digest, so at most
/// one of them is in the store).
fn settle_deriver(d: StorePath, known: &HashSet<StorePath>) -> StorePath {
    if known.contains(&d) {
        return d;
    }
    match recursive_nix_alternative(&d) {
        Some(alt) if known.contains(&alt) => alt,
        _ => d,
    }
}

/// A backend reading path infos from a snix `PathInfoService`; clones share
/// the channel and the snapshot.
#[derive(Clone)]
pub struct GrpcBackend(Arc<Inner>);

fn channel(addr: &Address, deadline: Duration) -> std::result::Result<Channel, GrpcError> {
    let endpoint = |uri: String| {
        Endpoint::from_shared(uri.clone()).map_err(|error| GrpcError::Endpoint {
            uri: format!("grpc+{uri}"),
            error,
        })
    };
    Ok(match addr {
        Address::Unix(path) => {
            let path = path.clone();
            // The URI is required by the API and ignored by the connector.
            Endpoint::from_static("http://unix.socket")
                .connect_timeout(deadline)
                .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                            tokio::net::UnixStream::connect(path).await?,
                        ))
                    }
                }))
        }
        Address::Http(h) => endpoint(format!("http://{h}"))?
            .connect_timeout(deadline)
            .connect_lazy(),
        #[cfg(not(feature = "tls"))]
        Address::Https(h) => return Err(GrpcError::NoTls(format!("grpc+https://{h}"))),
        #[cfg(feature = "tls")]
        Address::Https(h) => endpoint(format!("https://{h}"))?
            .tls_config(tonic::transport::ClientTlsConfig::new().with_native_roots())
            .map_err(|error| GrpcError::Tls {
                uri: format!("grpc+https://{h}"),
                error,
            })?
            .connect_timeout(deadline)
            .connect_lazy(),
    })
}

impl GrpcBackend {
    /// Connect and take the first snapshot; an unreachable service is an
    /// error here, so the daemon never reports READY without its backend.
    /// Content addresses are proven with the default options.
    pub async fn connect(
        address: &str,
        lower: LowerDir,
        store_dir: StoreDir,
        deadline: Duration,
    ) -> std::result::Result<Self, GrpcError> {
        Self::connect_with(address, lower, store_dir, deadline, CaProofOptions::default()).await
    }

    /// As `connect`, proving missing content addresses as `ca_proof` says
    /// (`CaProofOptions::OFF`: every path info keeps the `ca` it came with).
    pub async fn connect_with(
        address: &str,
        lower: LowerDir,
        store_dir: StoreDir,
        deadline: Duration,
        ca_proof: CaProofOptions,
    ) -> std::result::Result<Self, GrpcError> {
        let addr = Address::parse(address)?;
        let client = PathInfoServiceClient::new(channel(&addr, deadline)?).max_decoding_message_size(64 << 20);
        let b = GrpcBackend(Arc::new(Inner {
            address: address.to_owned(),
            client,
            deadline,
            lower,
            store_dir,
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            refresh_lock: tokio::sync::Mutex::new(()),
            last_attempt: Mutex::new(None),
            last_error: Mutex::new(None),
            drv_outputs: Mutex::new(HashMap::new()),
            ca_proof,
            proven: Mutex::new(HashMap::new()),
        }));
        b.list_into_snapshot_recorded()
            .await
            .map_err(|e| GrpcError::Startup(Box::new(e)))?;
        Ok(b)
    }

    pub fn address(&self) -> &str {
        &self.0.address
    }

    fn err(&self, call: &str, s: tonic::Status) -> GrpcError {
        GrpcError::Status {
            address: self.0.address.clone(),
            call: call.to_owned(),
            code: s.code(),
            message: s.message().to_owned(),
        }
    }

    fn convert_err(&self, call: &str, error: super::convert::ConvertError) -> GrpcError {
        GrpcError::Convert {
            address: self.0.address.clone(),
            call: call.to_owned(),
            error: Box::new(error),
        }
    }

    fn snap(&self) -> Arc<Snapshot> {
        self.0.snapshot.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn snapshot_len(&self) -> u64 {
        self.snap().known.len() as u64
    }

    pub(crate) fn status_detail(&self) -> String {
        let s = self.snap();
        let age = s.built.map(|b| b.elapsed().as_secs()).unwrap_or(0);
        let mut d = format!(
            "snapshot of {} paths from {}, {age}s old",
            s.known.len(),
            self.0.address
        );
        if let Some(e) = self.0.last_error.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            d.push_str(&format!(" (last refresh failed: {e})"));
        }
        d
    }

    /// `Get` by the digest of `hash_part`: the service's path info, if any.
    async fn get(&self, hash_part: &str) -> Result<Option<PathInfo>> {
        let Some(digest) = nix32_decode_vec(hash_part, 20) else {
            return Ok(None);
        };
        let mut req = tonic::Request::new(GetPathInfoRequest {
            by_what: Some(get_path_info_request::ByWhat::ByOutputHash(digest)),
        });
        req.set_timeout(self.0.deadline);
        match self.0.client.clone().get(req).await {
            Ok(r) => {
                let mut info =
                    from_snix(r.into_inner()).map_err(|e| self.convert_err(&format!("Get {hash_part}"), e))?;
                // The snapshot as it is (no refresh): cheap, and the simple rule otherwise.
                info.deriver = info.deriver.map(|d| settle_deriver(d, &self.snap().known));
                if info.ca.is_none() {
                    info.ca = self.proven_ca(&info).await;
                }
                Ok(Some(info))
            }
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(self.err(&format!("Get {hash_part}"), s)),
        }
    }

    /// The `ca` that `info`'s store path proves, if any (see the module
    /// doc): from the cache, else proven and remembered.
    async fn proven_ca(&self, info: &PathInfo) -> Option<ContentAddress> {
        let opts = self.0.ca_proof;
        if opts == CaProofOptions::OFF {
            return None;
        }
        if let Some((h, ca)) = self.0.proven.lock().unwrap_or_else(|e| e.into_inner()).get(&info.path) {
            if *h == info.nar_hash {
                return ca.clone();
            }
        }
        let proof = self.prove(info, opts).await;
        // Only a definite answer is kept: a read that failed (a missing
        // object, an I/O error) is tried again on the next query.
        if proof.is_definite() {
            let mut proven = self.0.proven.lock().unwrap_or_else(|e| e.into_inner());
            if proven.len() >= MAX_PROVEN {
                proven.clear();
            }
            proven.insert(info.path.clone(), (info.nar_hash, proof.clone().into_ca()));
        }
        proof.into_ca()
    }

    /// One proof: the NAR hash inline (pure hashing of a short string), a
    /// file's contents off the async threads.
    async fn prove(&self, info: &PathInfo, opts: CaProofOptions) -> Proof {
        let claim = Claim {
            path: &info.path,
            references: &info.references,
            nar_hash: &info.nar_hash,
            nar_size: info.nar_size,
        };
        if let Some(ca) = ca_proof::prove_from_nar_hash(&claim, &self.0.store_dir, opts) {
            return Proof::Proved(ca);
        }
        if !claim.needs_file(opts) {
            return Proof::Disproved;
        }
        let (path, references, nar_hash, nar_size) =
            (info.path.clone(), info.references.clone(), info.nar_hash, info.nar_size);
        let sd = self.0.store_dir.clone();
        let root = self.0.lower.root().to_path_buf();
        let file_only = CaProofOptions {
            from_nar_hash: false,
            ..opts
        };
        crate::blocking::run(move || {
            let claim = Claim {
                path: &path,
                references: &references,
                nar_hash: &nar_hash,
                nar_size,
            };
            ca_proof::prove_path(&claim, &sd, &root, file_only)
        })
        .await
    }

    pub async fn path_info(&self, p: &StorePath) -> Result<Option<PathInfo>> {
        // Same hash part, different name: not the path that was asked for.
        Ok(self.get(p.hash_part()).await?.filter(|info| info.path == *p))
    }

    pub async fn valid_subset(&self, paths: &[StorePath]) -> Result<Vec<StorePath>> {
        let mut out = Vec::new();
        for p in paths {
            if self.path_info(p).await?.is_some() {
                out.push(p.clone());
            }
        }
        Ok(out)
    }

    pub async fn path_from_hash_part(&self, hash_part: &str) -> Result<Option<StorePath>> {
        Ok(self.get(hash_part).await?.map(|info| info.path))
    }

    /// The snapshot, rebuilt first if it does not know `p` (at most every 2 s).
    async fn snap_knowing(&self, p: &StorePath) -> Result<Arc<Snapshot>> {
        let s = self.snap();
        if s.known.contains(p) {
            return Ok(s);
        }
        let recent = self
            .0
            .last_attempt
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| t.elapsed() < Duration::from_secs(2));
        if !recent {
            self.refresh().await?;
        }
        Ok(self.snap())
    }

    pub async fn referrers(&self, p: &StorePath) -> Result<Vec<StorePath>> {
        Ok(self
            .snap_knowing(p)
            .await?
            .referrers
            .get(p)
            .cloned()
            .unwrap_or_default())
    }

    pub(crate) async fn valid_derivers(&self, p: &StorePath) -> Result<Vec<StorePath>> {
        Ok(self.snap_knowing(p).await?.derivers.get(p).cloned().unwrap_or_default())
    }

    fn parse_drv(
        &self,
        drv: &StorePath,
    ) -> std::result::Result<snix_lower_store_types::drv::OutputMap, DrvOutputsError> {
        if let Some(o) = self.0.drv_outputs.lock().unwrap_or_else(|e| e.into_inner()).get(drv) {
            return Ok(o.clone());
        }
        let outs = self
            .0
            .lower
            .read_derivation_outputs(drv)
            .map_err(DrvOutputsError::Read)?;
        let mut v = Vec::new();
        for o in outs {
            let p = if o.path.is_empty() {
                None
            } else {
                Some(self.0.store_dir.parse(&o.path).map_err(DrvOutputsError::OutputPath)?)
            };
            v.push((o.name, p));
        }
        v.sort();
        self.0
            .drv_outputs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(drv.clone(), v.clone());
        Ok(v)
    }

    pub(crate) async fn derivation_outputs(
        &self,
        drv: &StorePath,
    ) -> Result<Option<snix_lower_store_types::drv::OutputMap>> {
        if self.path_info(drv).await?.is_none() {
            return Ok(None);
        }
        // Reading and parsing the .drv (the first time) blocks: off the async threads.
        let (me, d) = (self.clone(), drv.clone());
        let outputs = crate::blocking::run(move || me.parse_drv(&d)).await;
        let outputs = outputs.map_err(|error| GrpcError::Derivation {
            drv: drv.clone(),
            error,
        })?;
        Ok(Some(outputs))
    }

    pub async fn all_paths(&self) -> Result<Vec<StorePath>> {
        self.refresh().await?;
        let mut v: Vec<StorePath> = self.snap().known.iter().cloned().collect();
        v.sort();
        Ok(v)
    }

    pub async fn all_hashes(&self) -> Result<Vec<(StorePath, NarHash, u64)>> {
        self.refresh().await?;
        Ok(self.snap().hashes.clone())
    }

    /// Rebuild the snapshot from List.
    pub async fn refresh(&self) -> Result<()> {
        self.list_into_snapshot_recorded().await
    }

    /// [`Self::refresh`], with its typed error: one List at a time, its time
    /// and outcome recorded for the refresh loop and STATUS.
    async fn list_into_snapshot_recorded(&self) -> std::result::Result<(), GrpcError> {
        let _guard = self.0.refresh_lock.lock().await;
        *self.0.last_attempt.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        let r = self.list_into_snapshot().await;
        *self.0.last_error.lock().unwrap_or_else(|e| e.into_inner()) = r.as_ref().err().map(|e| e.to_string());
        r
    }

    async fn list_into_snapshot(&self) -> std::result::Result<(), GrpcError> {
        let mut req = tonic::Request::new(ListPathInfoRequest {});
        // List streams everything: allow it far longer than a single call.
        req.set_timeout(self.0.deadline * 60);
        let mut stream = self
            .0
            .client
            .clone()
            .list(req)
            .await
            .map_err(|s| self.err("List", s))?
            .into_inner();
        let mut s = Snapshot::default();
        let mut deriver_of: Vec<(StorePath, StorePath)> = Vec::new();
        while let Some(item) = stream.message().await.map_err(|st| self.err("List", st))? {
            let info = from_snix(item).map_err(|e| self.convert_err("List", e))?;
            for r in &info.references {
                s.referrers.entry(r.clone()).or_default().push(info.path.clone());
            }
            if let Some(d) = &info.deriver {
                deriver_of.push((info.path.clone(), d.clone()));
            }
            s.hashes.push((info.path.clone(), info.nar_hash, info.nar_size));
            s.known.insert(info.path);
        }
        // Valid derivers: derivations in the store naming the path as an
        // output (as Nix's DerivationOutputs table), plus recorded derivers.
        for (out, d) in deriver_of {
            let d = settle_deriver(d, &s.known);
            if s.known.contains(&d) {
                s.derivers.entry(out).or_default().push(d);
            }
        }
        let drvs: Vec<StorePath> = s.known.iter().filter(|p| p.is_derivation()).cloned().collect();
        for d in drvs {
            if let Ok(outs) = self.parse_drv(&d) {
                for (_, o) in outs.into_iter() {
                    if let Some(o) = o {
                        s.derivers.entry(o).or_default().push(d.clone());
                    }
                }
            }
        }
        for v in s.referrers.values_mut().chain(s.derivers.values_mut()) {
            v.sort();
            v.dedup();
        }
        s.hashes.sort_by(|a, b| a.0.cmp(&b.0));
        s.built = Some(Instant::now());
        *self.0.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(s);
        Ok(())
    }

    /// Refresh every `interval`; after a failure retry with backoff from 1 s.
    pub fn spawn_refresh_loop(&self, interval: Duration) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_secs(1);
            loop {
                let wait = if me.0.last_error.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
                    backoff.min(interval)
                } else {
                    interval
                };
                tokio::time::sleep(wait).await;
                match me.refresh().await {
                    Ok(()) => backoff = Duration::from_secs(1),
                    Err(e) => {
                        tracing::warn!(backend = %me.0.address, error = %e, retry_in = ?backoff, "refreshing the path-info snapshot failed");
                        backoff = (backoff * 2).min(interval);
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(s: &str) -> StorePath {
        StorePath::from_base_name(s).unwrap()
    }

    /// A backend whose channel is never used: for the proof cache alone.
    fn offline(lower: &std::path::Path) -> GrpcBackend {
        let ch = Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
        GrpcBackend(Arc::new(Inner {
            address: "offline".into(),
            client: PathInfoServiceClient::new(ch),
            deadline: Duration::from_secs(1),
            lower: LowerDir::open(lower).unwrap(),
            store_dir: StoreDir::new("/nix/store").unwrap(),
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            refresh_lock: tokio::sync::Mutex::new(()),
            last_attempt: Mutex::new(None),
            last_error: Mutex::new(None),
            drv_outputs: Mutex::new(HashMap::new()),
            ca_proof: CaProofOptions::default(),
            proven: Mutex::new(HashMap::new()),
        }))
    }

    /// `builtins.toFile "hello" "hello\n"` as Nix 2.26 registered it (see
    /// `tests/data/ca-proof-vectors.json`), without its `ca`.
    fn hello() -> PathInfo {
        PathInfo {
            ..PathInfo::new(
                sp("nmrmdcw1bfnl35a893n7nyhw4xa5vy08-hello"),
                NarHash::parse("sha256:1c37d01af40be2e80691de3cc3df44377a699afbb17c68f080964b2fd071fc13").unwrap(),
                120,
            )
        }
    }

    const HELLO_CA: &str = "text:sha256:00xyyr3fi8l6hb839bv3f7yb86yjv7xi1cgh1xnhipym4asvb4aq";

    /// An object that cannot be read yet hides its `ca` for that query only;
    /// definite answers (proved, or a directory where a file would prove) are
    /// kept, so the file is not read again.
    #[tokio::test]
    async fn only_definite_proofs_are_cached() {
        let dir = tempfile::tempdir().unwrap();
        let b = offline(dir.path());
        let info = hello();
        let obj = dir.path().join(info.path.base_name());
        assert_eq!(b.proven_ca(&info).await, None, "object missing");
        assert!(b.0.proven.lock().unwrap().is_empty(), "an undecided proof was cached");
        std::fs::write(&obj, "hello\n").unwrap();
        assert_eq!(b.proven_ca(&info).await.map(|c| c.render()).as_deref(), Some(HELLO_CA));
        std::fs::remove_file(&obj).unwrap();
        assert_eq!(
            b.proven_ca(&info).await.map(|c| c.render()).as_deref(),
            Some(HELLO_CA),
            "proof not cached"
        );
        // A definite no is kept too: a directory never becomes the file.
        let other = PathInfo {
            path: sp("nmrmdcw1bfnl35a893n7nyhw4xa5vy08-hellp"),
            ..hello()
        };
        std::fs::create_dir(dir.path().join(other.path.base_name())).unwrap();
        assert_eq!(b.proven_ca(&other).await, None);
        assert_eq!(
            b.0.proven.lock().unwrap().get(&other.path).map(|(_, ca)| ca.clone()),
            Some(None)
        );
    }

    /// A deriver read as `x.drv` becomes the recursive-Nix `x.drv.drv` only
    /// when that is the path the backend holds.
    #[test]
    fn settle_deriver_prefers_the_path_the_backend_holds() {
        let h = "1n5cj1q9ykjq2y3hbqh3v3rn9wsxk0sm";
        let simple = sp(&format!("{h}-inner.drv"));
        let rec = sp(&format!("{h}-inner.drv.drv"));
        let known_rec: HashSet<StorePath> = [rec.clone()].into();
        let known_simple: HashSet<StorePath> = [simple.clone()].into();
        assert_eq!(settle_deriver(simple.clone(), &known_rec), rec);
        assert_eq!(settle_deriver(simple.clone(), &known_simple), simple);
        assert_eq!(settle_deriver(simple.clone(), &HashSet::new()), simple);
        assert_eq!(settle_deriver(rec.clone(), &known_rec), rec);
    }
}
