//! What each op answers. One function of this file per question a Nix client
//! can ask the lower store; the wire layout of requests is in
//! `protocol::request`, the framing of replies in `protocol::stderr`.
//!
//! Read ops are answered from the index and the lower dir. Root and GC ops a
//! client may send are accepted without writing anything: the lower store is
//! never garbage collected, so every path is always kept. Ops that would
//! write or build are refused with an error naming the op.

use crate::backend::{Backend, BackendError};
use crate::index::PathInfo;
use crate::lower::LowerDir;
use crate::protocol::request::{Op, Request};
use crate::protocol::wire::WireBuf;
use crate::protocol::ProtoVersion;
use crate::store::path::shown;
use crate::store::realisation::DrvOutputId;
use crate::store::{StoreDir, StorePath};

/// How the connection loop should answer one request.
pub enum Reply {
    /// STDERR_NEXT for each log line, STDERR_LAST, then the body.
    Data { log: Vec<String>, body: WireBuf },
    /// STDERR_LAST, then the NAR of this (valid, present) path.
    Nar(StorePath),
    /// Run `verify` off the async threads, then reply like Nix's VerifyStore.
    Verify { check_contents: bool },
    /// STDERR_ERROR; the connection stays usable.
    Error(String),
}

fn data(body: WireBuf) -> Reply {
    Reply::Data { log: Vec::new(), body }
}

/// The read-only store behind the socket.
pub struct LowerStore {
    pub backend: Backend,
    pub lower: LowerDir,
    pub store_dir: StoreDir,
}

type OpResult = Result<Reply, String>;

impl LowerStore {
    fn path(&self, op: Op, s: &str) -> Result<StorePath, String> {
        self.store_dir.parse(s).map_err(|e| format!("{}: {e}", op.name()))
    }

    fn paths(&self, op: Op, v: &[String]) -> Result<Vec<StorePath>, String> {
        v.iter().map(|s| self.path(op, s)).collect()
    }

    fn idx<T>(&self, op: Op, r: Result<T, BackendError>) -> Result<T, String> {
        r.map_err(|e| {
            format!(
                "{}: the lower store's metadata backend ({}) failed: {e}",
                op.name(),
                self.backend.describe()
            )
        })
    }

    fn put_paths(&self, b: &mut WireBuf, paths: &[StorePath]) {
        b.u64(paths.len() as u64);
        for p in paths {
            b.str(&self.store_dir.display(p));
        }
    }

    fn put_opt_path(&self, b: &mut WireBuf, p: Option<&StorePath>) {
        b.str(&p.map(|p| self.store_dir.display(p)).unwrap_or_default());
    }

    /// Nix's `UnkeyedValidPathInfo` layout.
    fn put_path_info(&self, b: &mut WireBuf, info: &PathInfo, v: ProtoVersion) {
        self.put_opt_path(b, info.deriver.as_ref());
        b.str(&info.nar_hash.to_base16());
        self.put_paths(b, &info.references);
        b.u64(info.registration_time).u64(info.nar_size);
        if v.at_least(16) {
            b.bool(info.ultimate);
            b.strings(info.sigs.iter().map(String::as_str));
            b.str(info.ca.as_deref().unwrap_or(""));
        }
    }

    fn not_valid(&self, op: Op, p: &StorePath) -> String {
        format!(
            "{}: path '{}' is not valid in the lower store",
            op.name(),
            self.store_dir.display(p)
        )
    }

    /// Answer one decoded request.
    pub async fn answer(&self, req: &Request, v: ProtoVersion) -> Reply {
        if let Err(why) = self.lower.check_alive() {
            return Reply::Error(format!("{}: {why}", req.op().name()));
        }
        self.answer_inner(req, v).await.unwrap_or_else(Reply::Error)
    }

    async fn answer_inner(&self, req: &Request, v: ProtoVersion) -> OpResult {
        use Request as Q;
        let op = req.op();
        let mut b = WireBuf::default();
        match req {
            Q::IsValidPath(p) => {
                let p = self.path(op, p)?;
                b.bool(self.idx(op, self.backend.is_valid(&p).await)?);
            }
            Q::QueryValidPaths { paths, .. } => {
                // `substitute` is ignored: a lower store substitutes nothing.
                let paths = self.paths(op, paths)?;
                let mut valid = self.idx(op, self.backend.valid_subset(&paths).await)?;
                valid.sort();
                valid.dedup();
                self.put_paths(&mut b, &valid);
            }
            Q::QueryAllValidPaths => {
                let all = self.idx(op, self.backend.all_paths().await)?;
                self.put_paths(&mut b, &all);
            }
            Q::QueryPathInfo(p) => {
                let p = self.path(op, p)?;
                match self.idx(op, self.backend.path_info(&p).await)? {
                    Some(info) => {
                        b.bool(true);
                        self.put_path_info(&mut b, &info, v);
                    }
                    None => {
                        b.bool(false);
                    }
                }
            }
            Q::QueryPathHash(p) => {
                let p = self.path(op, p)?;
                let info = self
                    .idx(op, self.backend.path_info(&p).await)?
                    .ok_or_else(|| self.not_valid(op, &p))?;
                b.str(&info.nar_hash.to_base16());
            }
            Q::QueryReferences(p) => {
                let p = self.path(op, p)?;
                let info = self
                    .idx(op, self.backend.path_info(&p).await)?
                    .ok_or_else(|| self.not_valid(op, &p))?;
                self.put_paths(&mut b, &info.references);
            }
            Q::QueryDeriver(p) => {
                let p = self.path(op, p)?;
                let info = self
                    .idx(op, self.backend.path_info(&p).await)?
                    .ok_or_else(|| self.not_valid(op, &p))?;
                self.put_opt_path(&mut b, info.deriver.as_ref());
            }
            Q::QueryPathFromHashPart(h) => {
                // An invalid hash part simply matches nothing, as in Nix.
                let found = if h.len() == 32 && crate::store::hash::is_nix32(h) {
                    self.idx(op, self.backend.path_from_hash_part(h).await)?
                } else {
                    None
                };
                self.put_opt_path(&mut b, found.as_ref());
            }
            Q::QueryReferrers(p) => {
                let p = self.path(op, p)?;
                let r = self.idx(op, self.backend.referrers(&p).await)?;
                self.put_paths(&mut b, &r);
            }
            Q::QueryValidDerivers(p) => {
                let p = self.path(op, p)?;
                let r = self.idx(op, self.backend.valid_derivers(&p).await)?;
                self.put_paths(&mut b, &r);
            }
            Q::QueryDerivationOutputMap(p) | Q::QueryDerivationOutputs(p) | Q::QueryDerivationOutputNames(p) => {
                let p = self.path(op, p)?;
                let outs = self
                    .idx(op, self.backend.derivation_outputs(&p).await)?
                    .ok_or_else(|| self.not_valid(op, &p))?;
                match req {
                    Q::QueryDerivationOutputMap(_) => {
                        b.u64(outs.len() as u64);
                        for (name, path) in &outs {
                            b.str(name);
                            self.put_opt_path(&mut b, path.as_ref());
                        }
                    }
                    Q::QueryDerivationOutputs(_) => {
                        let mut paths: Vec<StorePath> = outs.into_iter().filter_map(|(_, p)| p).collect();
                        paths.sort();
                        self.put_paths(&mut b, &paths);
                    }
                    _ => {
                        b.strings(outs.iter().map(|(n, _)| n.as_str()));
                    }
                }
            }
            Q::QueryMissing(targets) => {
                let mut unknown = Vec::new();
                for t in targets {
                    if !self.derived_path_present(op, t).await? {
                        let base = t.split('!').next().unwrap_or(t);
                        unknown.push(self.path(op, base)?);
                    }
                }
                unknown.sort();
                unknown.dedup();
                self.put_paths(&mut b, &[]); // willBuild
                self.put_paths(&mut b, &[]); // willSubstitute
                self.put_paths(&mut b, &unknown);
                b.u64(0).u64(0); // downloadSize, narSize
            }
            Q::HasSubstitutes(p) => {
                self.path(op, p)?;
                b.bool(false);
            }
            Q::QuerySubstitutablePaths(paths) | Q::QuerySubstitutablePathInfos(paths) => {
                self.paths(op, paths)?;
                b.u64(0);
            }
            Q::QuerySubstitutablePathInfo(p) => {
                self.path(op, p)?;
                b.bool(false);
            }
            Q::QueryRealisation(id) => {
                // Nix's layout: before 1.31 the set of output paths, from
                // 1.31 the set of realisations as JSON; empty when unknown.
                let id = DrvOutputId::parse(id).map_err(|e| format!("{}: {e}", op.name()))?;
                let r = self.idx(op, self.backend.realisation(&id).await)?;
                if v.at_least(31) {
                    b.u64(u64::from(r.is_some()));
                    if let Some(r) = r {
                        b.str(&r.to_json());
                    }
                } else {
                    let paths: Vec<StorePath> = r.map(|r| r.out_path).into_iter().collect();
                    self.put_paths(&mut b, &paths);
                }
            }
            Q::NarFromPath(p) => {
                let p = self.path(op, p)?;
                if !self.idx(op, self.backend.is_valid(&p).await)? {
                    return Err(self.not_valid(op, &p));
                }
                self.lower
                    .check_present(&p)
                    .map_err(|why| format!("NarFromPath: '{}' is indexed but {why}", self.store_dir.display(&p)))?;
                return Ok(Reply::Nar(p));
            }
            Q::SetOptions(_) => {}
            Q::AddTempRoot(p) => {
                // Lower paths are never collected, so they need no root.
                self.path(op, p)?;
                b.u64(1);
            }
            Q::AddIndirectRoot(_) | Q::SyncWithGC => {
                b.u64(1);
            }
            Q::AddPermRoot { path, gc_root } => {
                let p = self.path(op, path)?;
                if !self.idx(op, self.backend.is_valid(&p).await)? {
                    return Err(self.not_valid(op, &p));
                }
                return Err(format!(
                    "AddPermRoot: the lower store is read-only and keeps every path, so it creates no root at '{}'; \
                     create the root on the client side (nix-store --add-root does this without the daemon)",
                    shown(gc_root)
                ));
            }
            Q::FindRoots => {
                b.u64(0);
            }
            Q::OptimiseStore => {
                // Nothing to do: the lower store is read-only and optimised
                // (or not) by whoever built it.
                b.u64(1);
            }
            Q::VerifyStore { repair: true, .. } => {
                return Err(
                    "VerifyStore: repair is impossible: the lower store is read-only; verify without --repair, \
                            and fix the lower store where it is built"
                        .into(),
                )
            }
            Q::VerifyStore {
                check_contents,
                repair: false,
            } => {
                return Ok(Reply::Verify {
                    check_contents: *check_contents,
                });
            }
            Q::EnsurePath(p) => {
                let p = self.path(op, p)?;
                if !self.idx(op, self.backend.is_valid(&p).await)? {
                    return Err(format!(
                        "EnsurePath: path '{}' is not in the lower store, and the lower store is read-only: it cannot build or substitute it",
                        self.store_dir.display(&p)
                    ));
                }
                b.u64(1);
            }
            Q::BuildPaths {
                paths,
                mode,
                with_results,
            } => {
                // Nothing to build when every requested path is already
                // present; anything else would need a build or substitution.
                let mut all_present = *mode == 0;
                for t in paths {
                    all_present = all_present && self.derived_path_present(op, t).await?;
                }
                if !all_present || *with_results {
                    return Err(refusal(op, paths.first().map(String::as_str)));
                }
                b.u64(1);
            }
            Q::Refused { op, subject } => return Err(refusal(*op, subject.as_deref())),
        }
        Ok(data(b))
    }

    /// Is a derived path (`/nix/store/x`, `/nix/store/x.drv!out,dev`, `…!*`)
    /// already present: the path valid, or every wanted output valid?
    async fn derived_path_present(&self, op: Op, t: &str) -> Result<bool, String> {
        let (base, outputs) = match t.split_once('!') {
            Some((b, o)) => (b, Some(o)),
            None => (t, None),
        };
        let p = self.path(op, base)?;
        let Some(outputs) = outputs else {
            return self.idx(op, self.backend.is_valid(&p).await);
        };
        let Some(outs) = self.idx(op, self.backend.derivation_outputs(&p).await)? else {
            return Ok(false);
        };
        let wanted: Vec<&str> = outputs.split(',').collect();
        for (name, path) in &outs {
            if wanted.contains(&"*") || wanted.contains(&name.as_str()) {
                match path {
                    Some(path) if self.idx(op, self.backend.is_valid(path).await)? => {}
                    _ => return Ok(false),
                }
            }
        }
        // An output name the derivation does not have is not present either.
        Ok(wanted.iter().all(|w| *w == "*" || outs.iter().any(|(n, _)| n == w)))
    }
}

/// The error for an op that would write or build.
pub fn refusal(op: Op, subject: Option<&str>) -> String {
    let about = subject.map(|s| format!(" ('{}')", shown(s))).unwrap_or_default();
    match op {
        Op::ExportPath => format!("ExportPath{about}: this obsolete op is not served; Nix clients use NarFromPath"),
        _ => format!(
            "{}{about}: the lower store is read-only; it answers queries only, so add, build or delete in the upper (local-overlay) store instead",
            op.name()
        ),
    }
}
