//! Op numbers and request decoding.
//!
//! [`read_request`] reads everything a client sends for one op, whatever the
//! daemon will answer. Ops that write (AddToStore, AddToStoreNar,
//! AddMultipleToStore, AddBuildLog, …) have their payload drained here and
//! decode to [`Request::Refused`], so the connection stays in step.
//! Paths stay raw strings: validating them is the handler's job, and a bad
//! path is an error reply, not a broken connection.

use tokio::io::AsyncRead;

use super::nar_skip::skip_nar;
use super::wire::{ProtocolError, WireReader};
use super::ProtoVersion;

macro_rules! ops {
    ($($name:ident = $num:literal,)*) => {
        /// Worker protocol op numbers (Nix's `WorkerProto::Op`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Op { $($name = $num,)* }

        impl Op {
            pub fn from_u64(n: u64) -> Option<Op> {
                match n { $($num => Some(Op::$name),)* _ => None }
            }
            pub fn name(self) -> &'static str {
                match self { $(Op::$name => stringify!($name),)* }
            }
        }
    };
}

ops! {
    IsValidPath = 1,
    HasSubstitutes = 3,
    QueryPathHash = 4,
    QueryReferences = 5,
    QueryReferrers = 6,
    AddToStore = 7,
    AddTextToStore = 8,
    BuildPaths = 9,
    EnsurePath = 10,
    AddTempRoot = 11,
    AddIndirectRoot = 12,
    SyncWithGC = 13,
    FindRoots = 14,
    ExportPath = 16,
    QueryDeriver = 18,
    SetOptions = 19,
    CollectGarbage = 20,
    QuerySubstitutablePathInfo = 21,
    QueryDerivationOutputs = 22,
    QueryAllValidPaths = 23,
    QueryPathInfo = 26,
    ImportPaths = 27,
    QueryDerivationOutputNames = 28,
    QueryPathFromHashPart = 29,
    QuerySubstitutablePathInfos = 30,
    QueryValidPaths = 31,
    QuerySubstitutablePaths = 32,
    QueryValidDerivers = 33,
    OptimiseStore = 34,
    VerifyStore = 35,
    BuildDerivation = 36,
    AddSignatures = 37,
    NarFromPath = 38,
    AddToStoreNar = 39,
    QueryMissing = 40,
    QueryDerivationOutputMap = 41,
    RegisterDrvOutput = 42,
    QueryRealisation = 43,
    AddMultipleToStore = 44,
    AddBuildLog = 45,
    BuildPathsWithResults = 46,
    AddPermRoot = 47,
}

/// Client settings from SetOptions. Only the verbosity matters to a
/// read-only store (it bounds the log lines we send); the rest is read to
/// keep the stream in step and recorded for the logs.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    pub verbosity: u64,
    pub overrides: Vec<(String, String)>,
}

/// One decoded request. Path arguments are raw strings, validated later.
#[derive(Debug, Clone)]
pub enum Request {
    IsValidPath(String),
    QueryValidPaths {
        paths: Vec<String>,
        substitute: bool,
    },
    QueryAllValidPaths,
    QueryPathInfo(String),
    QueryPathHash(String),
    QueryReferences(String),
    QueryPathFromHashPart(String),
    QueryReferrers(String),
    QueryValidDerivers(String),
    QueryDeriver(String),
    QueryDerivationOutputs(String),
    QueryDerivationOutputNames(String),
    QueryDerivationOutputMap(String),
    QueryMissing(Vec<String>),
    HasSubstitutes(String),
    QuerySubstitutablePaths(Vec<String>),
    QuerySubstitutablePathInfo(String),
    QuerySubstitutablePathInfos(Vec<String>),
    QueryRealisation(String),
    NarFromPath(String),
    SetOptions(ClientOptions),
    AddTempRoot(String),
    AddIndirectRoot(String),
    AddPermRoot {
        path: String,
        gc_root: String,
    },
    SyncWithGC,
    FindRoots,
    OptimiseStore,
    VerifyStore {
        check_contents: bool,
        repair: bool,
    },
    EnsurePath(String),
    /// BuildPaths (`with_results` false) or BuildPathsWithResults.
    BuildPaths {
        paths: Vec<String>,
        mode: u64,
        with_results: bool,
    },
    /// An op that would write; its payload has been consumed.
    Refused {
        op: Op,
        subject: Option<String>,
    },
}

impl Request {
    /// The op this request came from, for logs.
    pub fn op(&self) -> Op {
        use Request::*;
        match self {
            IsValidPath(_) => Op::IsValidPath,
            QueryValidPaths { .. } => Op::QueryValidPaths,
            QueryAllValidPaths => Op::QueryAllValidPaths,
            QueryPathInfo(_) => Op::QueryPathInfo,
            QueryPathHash(_) => Op::QueryPathHash,
            QueryReferences(_) => Op::QueryReferences,
            QueryPathFromHashPart(_) => Op::QueryPathFromHashPart,
            QueryReferrers(_) => Op::QueryReferrers,
            QueryValidDerivers(_) => Op::QueryValidDerivers,
            QueryDeriver(_) => Op::QueryDeriver,
            QueryDerivationOutputs(_) => Op::QueryDerivationOutputs,
            QueryDerivationOutputNames(_) => Op::QueryDerivationOutputNames,
            QueryDerivationOutputMap(_) => Op::QueryDerivationOutputMap,
            QueryMissing(_) => Op::QueryMissing,
            HasSubstitutes(_) => Op::HasSubstitutes,
            QuerySubstitutablePaths(_) => Op::QuerySubstitutablePaths,
            QuerySubstitutablePathInfo(_) => Op::QuerySubstitutablePathInfo,
            QuerySubstitutablePathInfos(_) => Op::QuerySubstitutablePathInfos,
            QueryRealisation(_) => Op::QueryRealisation,
            NarFromPath(_) => Op::NarFromPath,
            SetOptions(_) => Op::SetOptions,
            AddTempRoot(_) => Op::AddTempRoot,
            AddIndirectRoot(_) => Op::AddIndirectRoot,
            AddPermRoot { .. } => Op::AddPermRoot,
            SyncWithGC => Op::SyncWithGC,
            FindRoots => Op::FindRoots,
            OptimiseStore => Op::OptimiseStore,
            VerifyStore { .. } => Op::VerifyStore,
            EnsurePath(_) => Op::EnsurePath,
            BuildPaths {
                with_results: false, ..
            } => Op::BuildPaths,
            BuildPaths { with_results: true, .. } => Op::BuildPathsWithResults,
            Refused { op, .. } => *op,
        }
    }

    /// The store path (or other subject) the request is about, for logs.
    pub fn subject(&self) -> Option<&str> {
        use Request::*;
        match self {
            IsValidPath(p)
            | QueryPathInfo(p)
            | QueryPathHash(p)
            | QueryReferences(p)
            | QueryPathFromHashPart(p)
            | QueryReferrers(p)
            | QueryValidDerivers(p)
            | QueryDeriver(p)
            | QueryDerivationOutputs(p)
            | QueryDerivationOutputNames(p)
            | QueryDerivationOutputMap(p)
            | HasSubstitutes(p)
            | QuerySubstitutablePathInfo(p)
            | QueryRealisation(p)
            | NarFromPath(p)
            | AddTempRoot(p)
            | AddIndirectRoot(p)
            | EnsurePath(p) => Some(p),
            AddPermRoot { path, .. } => Some(path),
            Refused { subject, .. } => subject.as_deref(),
            _ => None,
        }
    }
}

/// Decode the request of `op` (the op word has been read).
pub async fn read_request<R: AsyncRead + Unpin>(
    r: &mut WireReader<R>,
    op: Op,
    v: ProtoVersion,
) -> Result<Request, ProtocolError> {
    use Request as Q;
    let refused = |subject: Option<String>| Q::Refused { op, subject };
    Ok(match op {
        Op::IsValidPath => Q::IsValidPath(r.string("store path").await?),
        Op::QueryValidPaths => {
            let paths = r.strings("store paths").await?;
            let substitute = if v.at_least(27) { r.u64().await? != 0 } else { false };
            Q::QueryValidPaths { paths, substitute }
        }
        Op::QueryAllValidPaths => Q::QueryAllValidPaths,
        Op::QueryPathInfo => Q::QueryPathInfo(r.string("store path").await?),
        Op::QueryPathHash => Q::QueryPathHash(r.string("store path").await?),
        Op::QueryReferences => Q::QueryReferences(r.string("store path").await?),
        Op::QueryPathFromHashPart => Q::QueryPathFromHashPart(r.string("hash part").await?),
        Op::QueryReferrers => Q::QueryReferrers(r.string("store path").await?),
        Op::QueryValidDerivers => Q::QueryValidDerivers(r.string("store path").await?),
        Op::QueryDeriver => Q::QueryDeriver(r.string("store path").await?),
        Op::QueryDerivationOutputs => Q::QueryDerivationOutputs(r.string("store path").await?),
        Op::QueryDerivationOutputNames => Q::QueryDerivationOutputNames(r.string("store path").await?),
        Op::QueryDerivationOutputMap => Q::QueryDerivationOutputMap(r.string("store path").await?),
        Op::QueryMissing => Q::QueryMissing(r.strings("derived paths").await?),
        Op::HasSubstitutes => Q::HasSubstitutes(r.string("store path").await?),
        Op::QuerySubstitutablePaths => Q::QuerySubstitutablePaths(r.strings("store paths").await?),
        Op::QuerySubstitutablePathInfo => Q::QuerySubstitutablePathInfo(r.string("store path").await?),
        Op::QuerySubstitutablePathInfos => {
            if v.at_least(22) {
                // A map from store path to an optional content address.
                let pairs = r.string_pairs("store path to CA map").await?;
                Q::QuerySubstitutablePathInfos(pairs.into_iter().map(|(p, _)| p).collect())
            } else {
                Q::QuerySubstitutablePathInfos(r.strings("store paths").await?)
            }
        }
        Op::QueryRealisation => Q::QueryRealisation(r.string("derivation output id").await?),
        Op::NarFromPath => Q::NarFromPath(r.string("store path").await?),
        Op::SetOptions => {
            let mut o = ClientOptions::default();
            r.u64().await?; // keepFailed
            r.u64().await?; // keepGoing
            r.u64().await?; // tryFallback
            o.verbosity = r.u64().await?;
            for _ in 0..8 {
                // maxBuildJobs, maxSilentTime, useBuildHook, verboseBuild,
                // logType, printBuildTrace, buildCores, useSubstitutes
                r.u64().await?;
            }
            o.overrides = r.string_pairs("option overrides").await?;
            Q::SetOptions(o)
        }
        Op::AddTempRoot => Q::AddTempRoot(r.string("store path").await?),
        Op::AddIndirectRoot => Q::AddIndirectRoot(r.string("root path").await?),
        Op::AddPermRoot => {
            let path = r.string("store path").await?;
            let gc_root = r.string("root path").await?;
            Q::AddPermRoot { path, gc_root }
        }
        Op::SyncWithGC => Q::SyncWithGC,
        Op::FindRoots => Q::FindRoots,
        Op::OptimiseStore => Q::OptimiseStore,
        Op::VerifyStore => {
            let check_contents = r.u64().await? != 0;
            let repair = r.u64().await? != 0;
            Q::VerifyStore { check_contents, repair }
        }
        Op::EnsurePath => Q::EnsurePath(r.string("store path").await?),
        Op::BuildPaths | Op::BuildPathsWithResults => {
            let paths = r.strings("derived paths").await?;
            let mode = r.u64().await?;
            Q::BuildPaths {
                paths,
                mode,
                with_results: op == Op::BuildPathsWithResults,
            }
        }

        // Everything below writes; read it all, keep only a name for the error.
        Op::AddToStore => {
            let name = r.string("name").await?;
            if v.at_least(25) {
                r.skip_string("content address method").await?;
                r.strings("references").await?;
                r.u64().await?; // repair
                r.drain_framed().await?;
            } else {
                r.u64().await?; // fixed
                r.u64().await?; // recursive
                r.skip_string("hash algorithm").await?;
                skip_nar(r).await?;
            }
            refused(Some(name))
        }
        Op::AddTextToStore => {
            let name = r.string("name").await?;
            r.skip_string("text").await?;
            r.strings("references").await?;
            refused(Some(name))
        }
        Op::AddToStoreNar => {
            let path = r.string("store path").await?;
            r.skip_string("deriver").await?;
            r.skip_string("NAR hash").await?;
            r.strings("references").await?;
            r.u64().await?; // registrationTime
            r.u64().await?; // narSize
            r.u64().await?; // ultimate
            r.strings("signatures").await?;
            r.skip_string("content address").await?;
            r.u64().await?; // repair
            r.u64().await?; // dontCheckSigs
            if v.at_least(23) {
                r.drain_framed().await?;
            }
            // 1.21 and 1.22 send the NAR only when asked (STDERR_READ); we never ask.
            refused(Some(path))
        }
        Op::AddMultipleToStore => {
            r.u64().await?; // repair
            r.u64().await?; // dontCheckSigs
            r.drain_framed().await?;
            refused(None)
        }
        Op::AddBuildLog => {
            let path = r.string("store path").await?;
            r.drain_framed().await?;
            refused(Some(path))
        }
        Op::AddSignatures => {
            let path = r.string("store path").await?;
            r.strings("signatures").await?;
            refused(Some(path))
        }
        Op::BuildDerivation => {
            let path = r.string("derivation path").await?;
            let outputs = r.list_len("derivation outputs").await?;
            for _ in 0..outputs {
                for _ in 0..4 {
                    r.skip_string("derivation output").await?;
                }
            }
            r.strings("input sources").await?;
            r.skip_string("platform").await?;
            r.skip_string("builder").await?;
            r.strings("arguments").await?;
            let env = r.list_len("environment").await?;
            for _ in 0..env * 2 {
                r.skip_string("environment entry").await?;
            }
            r.u64().await?; // build mode
            refused(Some(path))
        }
        Op::CollectGarbage => {
            r.u64().await?; // action
            r.strings("paths to delete").await?;
            r.u64().await?; // ignoreLiveness
            r.u64().await?; // maxFreed
            for _ in 0..3 {
                r.u64().await?; // obsolete
            }
            refused(None)
        }
        Op::RegisterDrvOutput => {
            let id = r.string("realisation").await?;
            if !v.at_least(31) {
                r.skip_string("output path").await?;
            }
            refused(Some(id))
        }
        Op::ImportPaths => refused(None), // data comes only on STDERR_READ, which we never send
        Op::ExportPath => {
            let path = r.string("store path").await?;
            r.u64().await?; // obsolete sign flag
            refused(Some(path))
        }
    })
}
