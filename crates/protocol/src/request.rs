//! Op numbers and the request of every op, one type each.
//!
//! Each request type (named as its op) has one layout, written once in its
//! [`Wire`] impl: `decode` for the daemon, `encode` for the test client. Its
//! [`Request::Reply`] names the type that follows STDERR_LAST.
//!
//! Ops that write (AddToStore, AddToStoreNar, AddMultipleToStore,
//! AddBuildLog, …) have their payload drained when decoding, so a refused op
//! leaves the connection in step; they keep only a name for the error.
//! Paths stay raw strings: validating them is the handler's job, and a bad
//! path is an error reply, not a broken connection.
//!
//! [`for_each_op!`] is the one table of ops: it defines [`Op`] and
//! [`AnyRequest`] here and the dispatch in `server::session`. Adding an op means
//! a line there, a request type here and a handler in `server::ops`.

use tokio::io::AsyncRead;

use super::codec::*;
use super::nar_skip::skip_nar;
use super::wire::{ProtocolError, WireBuf, WireReader};
pub use snix_lower_store_types::derived_path::DerivedPath;

/// The table of ops: `Name = number`. The request type of each op has the
/// op's name. Calls `$m!` with the whole table.
#[macro_export]
macro_rules! for_each_op {
    ($m:ident) => {
        $m! {
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
    };
}
pub use crate::for_each_op;

macro_rules! define_ops {
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

        /// Any decoded request (the fuzz targets split op streams with it).
        #[derive(Debug, Clone)]
        pub enum AnyRequest { $($name($name),)* }

        impl AnyRequest {
            /// The op this request came from.
            pub fn op(&self) -> Op {
                match self { $(AnyRequest::$name(_) => Op::$name,)* }
            }
            /// The store path (or other subject) the request is about, for logs.
            pub fn subject(&self) -> Option<&str> {
                match self { $(AnyRequest::$name(q) => q.subject(),)* }
            }
            /// Read the reply to this request (after STDERR_LAST) with its
            /// op's reply type, and drop it (fuzz targets, tests).
            pub async fn skip_reply<R: AsyncRead + Unpin + Send>(
                &self,
                r: &mut WireReader<R>,
            ) -> Result<(), ProtocolError> {
                match self { $(AnyRequest::$name(_) => drop(<$name as Request>::Reply::decode(r).await?),)* }
                Ok(())
            }
        }

        /// Decode the request of `op` (the op word has been read) at the
        /// reader's version.
        pub async fn read_request<R: AsyncRead + Unpin + Send>(
            r: &mut WireReader<R>,
            op: Op,
        ) -> Result<AnyRequest, ProtocolError> {
            Ok(match op { $(Op::$name => AnyRequest::$name($name::decode(r).await?),)* })
        }
    };
}
for_each_op!(define_ops);

/// A request of one op: its number, its layout (the [`Wire`] impl) and the
/// type of its reply.
pub trait Request: Wire + std::fmt::Debug {
    const OP: Op;
    /// What follows STDERR_LAST when the op succeeds.
    type Reply: Wire;
    /// The store path (or other subject) the request is about, for logs and
    /// for the refusal message.
    fn subject(&self) -> Option<&str> {
        None
    }
}

/// No reply: the op is always refused (a write), so nothing ever follows
/// STDERR_LAST. Decoding one is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoReply {}

impl Wire for NoReply {
    fn encode(&self, _: &mut WireBuf) {
        match *self {}
    }
    async fn decode<R: AsyncRead + Unpin + Send>(_: &mut WireReader<R>) -> Result<Self, ProtocolError> {
        Err(ProtocolError::Malformed(
            "unexpected: a reply to an op the daemon refuses".into(),
        ))
    }
}

/// NarFromPath's reply: the NAR follows STDERR_LAST unframed, so there is
/// nothing to decode here; the client reads the NAR itself (its size comes
/// from QueryPathInfo).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NarFollows;

impl Wire for NarFollows {
    fn encode(&self, _: &mut WireBuf) {}
    async fn decode<R: AsyncRead + Unpin + Send>(_: &mut WireReader<R>) -> Result<Self, ProtocolError> {
        Ok(NarFollows)
    }
}

/// A request whose only field is one string: its layout and subject.
macro_rules! one_string_request {
    ($(#[$doc:meta])* $name:ident { $field:ident: $label:literal } -> $reply:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct $name {
            pub $field: String,
        }
        impl Wire for $name {
            fn encode(&self, out: &mut WireBuf) {
                out.str(&self.$field);
            }
            async fn decode<R: AsyncRead + Unpin + Send>(
                r: &mut WireReader<R>,
    ) -> Result<Self, ProtocolError> {
                Ok($name { $field: r.string($label).await? })
            }
        }
        impl Request for $name {
            const OP: Op = Op::$name;
            type Reply = $reply;
            fn subject(&self) -> Option<&str> {
                Some(&self.$field)
            }
        }
        #[cfg(test)]
        impl super::roundtrip_tests::OneString for $name {
            fn with(text: String) -> Self {
                $name { $field: text }
            }
        }
    };
}

/// A request without fields.
macro_rules! empty_request {
    ($(#[$doc:meta])* $name:ident -> $reply:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct $name;
        impl Wire for $name {
            fn encode(&self, _: &mut WireBuf) {}
            async fn decode<R: AsyncRead + Unpin + Send>(
                _: &mut WireReader<R>,
    ) -> Result<Self, ProtocolError> {
                Ok($name)
            }
        }
        impl Request for $name {
            const OP: Op = Op::$name;
            type Reply = $reply;
        }
    };
}

/// A request whose fields are all in `Wire` order with a label each (their
/// [`Labelled`] layouts); its subject is the first field when that is a
/// string. An optional `[field: ty = |v| expr]` after the subject is not on
/// the wire: decoding sets it from the reader's version, encoding ignores
/// it.
macro_rules! request {
    (
        $(#[$doc:meta])* $name:ident -> $reply:ty;
        subject: $subject:expr;
        $( [$(#[$ndoc:meta])* $nfield:ident: $nty:ty = |$nv:ident| $nexpr:expr] )?
        $( $(#[$fdoc:meta])* $field:ident: $ty:ty = $label:literal; )*
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct $name {
            $( $(#[$fdoc])* pub $field: $ty, )*
            $( $(#[$ndoc])* pub $nfield: $nty, )?
        }
        impl Wire for $name {
            fn encode(&self, out: &mut WireBuf) {
                $( Labelled::put(&self.$field, out); )*
            }
            async fn decode<R: AsyncRead + Unpin + Send>(
                r: &mut WireReader<R>,
            ) -> Result<Self, ProtocolError> {
                $( let $field = <$ty as Labelled>::read(r, $label).await?; )*
                $( let $nfield = { let $nv = r.version(); $nexpr }; )?
                Ok($name { $($field,)* $($nfield,)? })
            }
        }
        impl Request for $name {
            const OP: Op = Op::$name;
            type Reply = $reply;
            fn subject(&self) -> Option<&str> {
                let f: fn(&$name) -> Option<&str> = $subject;
                f(self)
            }
        }
    };
}

// ---- Paths: validity, path infos, references, derivers -------------------

one_string_request!(
    /// Is this path valid?
    IsValidPath { path: "store path" } -> bool);
one_string_request!(
    /// The path info, if valid.
    QueryPathInfo { path: "store path" } -> Option<UnkeyedValidPathInfo>);
one_string_request!(
    /// The NAR hash (base16) of a valid path.
    QueryPathHash { path: "store path" } -> String);
one_string_request!(
    /// The references of a valid path.
    QueryReferences { path: "store path" } -> Vec<String>);
one_string_request!(
    /// The valid path whose hash part is this, if any.
    QueryPathFromHashPart { hash_part: "hash part" } -> Option<String>);
one_string_request!(
    /// The valid paths referring to this one.
    QueryReferrers { path: "store path" } -> Vec<String>);
one_string_request!(
    /// The valid derivations producing this path.
    QueryValidDerivers { path: "store path" } -> Vec<String>);
one_string_request!(
    /// The deriver recorded for a valid path.
    QueryDeriver { path: "store path" } -> Option<String>);
empty_request!(
    /// Every valid path.
    QueryAllValidPaths -> Vec<String>);

/// The valid subset of these paths. `substitute` is sent from 1.27.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryValidPaths {
    pub paths: Vec<String>,
    pub substitute: bool,
}

impl Wire for QueryValidPaths {
    fn encode(&self, out: &mut WireBuf) {
        self.paths.put(out);
        if out.version().at_least(27) {
            self.substitute.put(out);
        }
    }
    async fn decode<R: AsyncRead + Unpin + Send>(r: &mut WireReader<R>) -> Result<Self, ProtocolError> {
        let paths = read_field(r, "store paths").await?;
        let substitute = r.version().at_least(27) && r.bool("substitute").await?;
        Ok(QueryValidPaths { paths, substitute })
    }
}

impl Request for QueryValidPaths {
    const OP: Op = Op::QueryValidPaths;
    type Reply = Vec<String>;
}

// ---- Derivations ------------------------------------------------------------

one_string_request!(
    /// The output paths of a derivation.
    QueryDerivationOutputs { path: "store path" } -> Vec<String>);
one_string_request!(
    /// The output names of a derivation.
    QueryDerivationOutputNames { path: "store path" } -> Vec<String>);
one_string_request!(
    /// Output name to optional output path.
    QueryDerivationOutputMap { path: "store path" } -> OutputMap);
one_string_request!(
    /// The realisation of a content-addressed derivation output
    /// (`sha256:…!out`).
    QueryRealisation { id: "derivation output id" } -> Realisations);
request!(
    /// What building these derived paths would need.
    QueryMissing -> Missing;
    subject: |_| None;
    [
        /// Decoded below 1.30, where Nix sends derived paths as
        /// `StorePathWithOutputs`: a bare `.drv` path asks for all its
        /// outputs, not the `.drv` itself. Not on the wire.
        bare_drv_means_outputs: bool = |v| !v.at_least(30)
    ]
    /// Derived paths (`/nix/store/…`, `/nix/store/….drv!out,dev`, `…!*`).
    targets: Vec<DerivedPath> = "derived paths";
);

// ---- Substitutes: a lower store has none ----------------------------------

one_string_request!(
    /// Does a substituter have this path?
    HasSubstitutes { path: "store path" } -> bool);
one_string_request!(
    /// A substitutable path's info, if any.
    QuerySubstitutablePathInfo { path: "store path" } -> Option<SubstitutablePathInfo>);
request!(
    /// Which of these paths substituters have.
    QuerySubstitutablePaths -> Vec<String>;
    subject: |_| None;
    paths: Vec<String> = "store paths";
);

/// The infos substituters have for these paths. From 1.22 a map from path
/// to optional content address; before, a list of paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuerySubstitutablePathInfos {
    pub paths: Vec<(String, Option<String>)>,
}

impl Wire for QuerySubstitutablePathInfos {
    fn encode(&self, out: &mut WireBuf) {
        if out.version().at_least(22) {
            self.paths.put(out);
        } else {
            out.strings(self.paths.iter().map(|(p, _)| p.as_str()));
        }
    }
    async fn decode<R: AsyncRead + Unpin + Send>(r: &mut WireReader<R>) -> Result<Self, ProtocolError> {
        let paths = if r.version().at_least(22) {
            read_field(r, "store path to CA map").await?
        } else {
            let paths: Vec<String> = read_field(r, "store paths").await?;
            paths.into_iter().map(|p| (p, None)).collect()
        };
        Ok(QuerySubstitutablePathInfos { paths })
    }
}

impl Request for QuerySubstitutablePathInfos {
    const OP: Op = Op::QuerySubstitutablePathInfos;
    type Reply = SubstitutablePathInfos;
}

/// What a substituter knows of a path (Nix's `SubstitutablePathInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubstitutablePathInfo {
    pub deriver: Option<String>,
    pub references: Vec<String>,
    pub download_size: u64,
    pub nar_size: u64,
}

/// Its fields name themselves, in a list or alone.
impl Labelled for SubstitutablePathInfo {
    fn put(&self, out: &mut WireBuf) {
        self.deriver.put(out);
        self.references.put(out);
        out.u64(self.download_size).u64(self.nar_size);
    }
    async fn read<R: AsyncRead + Unpin + Send>(r: &mut WireReader<R>, _: &'static str) -> Result<Self, ProtocolError> {
        Ok(SubstitutablePathInfo {
            deriver: read_field(r, "deriver").await?,
            references: read_field(r, "references").await?,
            download_size: r.u64().await?,
            nar_size: r.u64().await?,
        })
    }
}

impl Wire for SubstitutablePathInfo {
    fn encode(&self, out: &mut WireBuf) {
        self.put(out);
    }
    async fn decode<R: AsyncRead + Unpin + Send>(r: &mut WireReader<R>) -> Result<Self, ProtocolError> {
        read_field(r, "substitutable path info").await
    }
}

/// QuerySubstitutablePathInfo's reply (`Option<SubstitutablePathInfo>`): a
/// flag, then the info if found.
impl Flagged for SubstitutablePathInfo {
    const FLAG: &'static str = "found";
}

/// QuerySubstitutablePathInfos' reply: path to info.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubstitutablePathInfos(pub Vec<(String, SubstitutablePathInfo)>);

impl Wire for SubstitutablePathInfos {
    fn encode(&self, out: &mut WireBuf) {
        self.0.put(out);
    }
    async fn decode<R: AsyncRead + Unpin + Send>(r: &mut WireReader<R>) -> Result<Self, ProtocolError> {
        Ok(SubstitutablePathInfos(read_field(r, "substitutable path infos").await?))
    }
}

// ---- NAR ------------------------------------------------------------------

one_string_request!(
    /// The NAR of a valid path, streamed after STDERR_LAST.
    NarFromPath { path: "store path" } -> NarFollows);

// ---- Session settings -------------------------------------------------------

/// Client settings. Only the verbosity matters to a read-only store; the
/// rest is read to keep the stream in step and recorded for the logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetOptions {
    pub keep_failed: u64,
    pub keep_going: u64,
    pub try_fallback: u64,
    pub verbosity: u64,
    /// maxBuildJobs, maxSilentTime, useBuildHook, verboseBuild, logType,
    /// printBuildTrace, buildCores, useSubstitutes.
    pub build_settings: [u64; 8],
    pub overrides: Vec<(String, String)>,
}

impl Wire for SetOptions {
    fn encode(&self, out: &mut WireBuf) {
        out.u64(self.keep_failed)
            .u64(self.keep_going)
            .u64(self.try_fallback)
            .u64(self.verbosity);
        for w in self.build_settings {
            out.u64(w);
        }
        self.overrides.put(out);
    }
    async fn decode<R: AsyncRead + Unpin + Send>(r: &mut WireReader<R>) -> Result<Self, ProtocolError> {
        let mut o = SetOptions {
            keep_failed: r.u64().await?,
            keep_going: r.u64().await?,
            try_fallback: r.u64().await?,
            verbosity: r.u64().await?,
            ..Default::default()
        };
        for w in o.build_settings.iter_mut() {
            *w = r.u64().await?;
        }
        o.overrides = read_field(r, "option overrides").await?;
        Ok(o)
    }
}

impl Request for SetOptions {
    const OP: Op = Op::SetOptions;
    type Reply = ();
}

// ---- Roots and GC: accepted, nothing written --------------------------------

one_string_request!(
    /// Keep this path alive for the session.
    AddTempRoot { path: "store path" } -> u64);
one_string_request!(
    /// Register an indirect GC root.
    AddIndirectRoot { path: "root path" } -> u64);
empty_request!(
    /// Wait for a running GC.
    SyncWithGC -> u64);
empty_request!(
    /// The GC roots.
    FindRoots -> Roots);
empty_request!(
    /// Deduplicate the store.
    OptimiseStore -> u64);
request!(
    /// Register a permanent GC root (refused: it would write).
    AddPermRoot -> String;
    subject: |q| Some(&q.path);
    path: String = "store path";
    gc_root: String = "root path";
);

/// FindRoots' reply: root link to store path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roots(pub Vec<(String, String)>);

impl Wire for Roots {
    fn encode(&self, out: &mut WireBuf) {
        self.0.put(out);
    }
    async fn decode<R: AsyncRead + Unpin + Send>(r: &mut WireReader<R>) -> Result<Self, ProtocolError> {
        Ok(Roots(read_field(r, "roots").await?))
    }
}

// ---- Verify, build ------------------------------------------------------------

request!(
    /// Check the store; log lines name each problem, the reply says if any.
    VerifyStore -> bool;
    subject: |_| None;
    check_contents: bool = "check contents";
    repair: bool = "repair";
);
one_string_request!(
    /// Make a path valid (build or substitute it if needed).
    EnsurePath { path: "store path" } -> u64);
request!(
    /// Build derived paths (nothing to do when all are present).
    BuildPaths -> u64;
    subject: |q| q.paths.first().map(DerivedPath::as_str);
    [
        /// Decoded below 1.30, where Nix sends derived paths as
        /// `StorePathWithOutputs`: a bare `.drv` path asks for all its
        /// outputs, not the `.drv` itself. Not on the wire.
        bare_drv_means_outputs: bool = |v| !v.at_least(30)
    ]
    paths: Vec<DerivedPath> = "derived paths";
    mode: BuildMode = "build mode";
);
request!(
    /// Build derived paths and report results (always refused).
    BuildPathsWithResults -> NoReply;
    subject: |q| q.paths.first().map(DerivedPath::as_str);
    [
        /// Decoded below 1.30, where Nix sends derived paths as
        /// `StorePathWithOutputs`: a bare `.drv` path asks for all its
        /// outputs, not the `.drv` itself. Not on the wire.
        bare_drv_means_outputs: bool = |v| !v.at_least(30)
    ]
    paths: Vec<DerivedPath> = "derived paths";
    mode: BuildMode = "build mode";
);

// ---- Writes: payload drained, always refused ---------------------------------

/// A write op: decoding drains its payload and keeps only what the refusal
/// names. `rest` is what the test client sends after the kept fields (the
/// payload, in the op's own layout); it is always empty after decoding.
macro_rules! write_request {
    (
        $(#[$doc:meta])* $name:ident { $($kept:ident: $label:literal),* }
        subject: $subject:expr;
        drain: |$r:ident| $drain:block
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct $name {
            $( pub $kept: String, )*
            pub rest: Vec<u8>,
        }
        impl Wire for $name {
            fn encode(&self, out: &mut WireBuf) {
                $( out.str(&self.$kept); )*
                out.0.extend_from_slice(&self.rest);
            }
            async fn decode<R: AsyncRead + Unpin + Send>(
                $r: &mut WireReader<R>,
            ) -> Result<Self, ProtocolError> {
                $( let $kept = $r.string($label).await?; )*
                $drain
                Ok($name { $($kept,)* rest: Vec::new() })
            }
        }
        impl Request for $name {
            const OP: Op = Op::$name;
            type Reply = NoReply;
            fn subject(&self) -> Option<&str> {
                let f: fn(&$name) -> Option<&str> = $subject;
                f(self)
            }
        }
    };
}

write_request!(
    /// Add a file or NAR (before 1.25 an unframed NAR, then framed data).
    AddToStore { name: "name" }
    subject: |q| Some(&q.name);
    drain: |r| {
        if r.version().at_least(25) {
            r.skip_string("content address method").await?;
            read_field::<Vec<String>, _>(r, "references").await?;
            r.u64().await?; // repair
            r.drain_framed().await?;
        } else {
            r.u64().await?; // fixed
            r.u64().await?; // recursive
            r.skip_string("hash algorithm").await?;
            skip_nar(r).await?;
        }
    }
);
write_request!(
    /// Add a text file.
    AddTextToStore { name: "name" }
    subject: |q| Some(&q.name);
    drain: |r| {
        r.skip_string("text").await?;
        read_field::<Vec<String>, _>(r, "references").await?;
    }
);
write_request!(
    /// Add a NAR with its path info (framed from 1.23; 1.21 and 1.22 send it
    /// only when asked with STDERR_READ, which we never do).
    AddToStoreNar { path: "store path" }
    subject: |q| Some(&q.path);
    drain: |r| {
        r.skip_string("deriver").await?;
        r.skip_string("NAR hash").await?;
        read_field::<Vec<String>, _>(r, "references").await?;
        r.u64().await?; // registrationTime
        r.u64().await?; // narSize
        r.u64().await?; // ultimate
        read_field::<Vec<String>, _>(r, "signatures").await?;
        r.skip_string("content address").await?;
        r.u64().await?; // repair
        r.u64().await?; // dontCheckSigs
        if r.version().at_least(23) {
            r.drain_framed().await?;
        }
    }
);
write_request!(
    /// Add several NARs in one framed stream.
    AddMultipleToStore {}
    subject: |_| None;
    drain: |r| {
        r.u64().await?; // repair
        r.u64().await?; // dontCheckSigs
        r.drain_framed().await?;
    }
);
write_request!(
    /// Store a build log.
    AddBuildLog { path: "store path" }
    subject: |q| Some(&q.path);
    drain: |r| {
        r.drain_framed().await?;
    }
);
write_request!(
    /// Add signatures to a path.
    AddSignatures { path: "store path" }
    subject: |q| Some(&q.path);
    drain: |r| {
        read_field::<Vec<String>, _>(r, "signatures").await?;
    }
);
write_request!(
    /// Build a derivation sent inline.
    BuildDerivation { path: "derivation path" }
    subject: |q| Some(&q.path);
    drain: |r| {
        let outputs = r.list_len("derivation outputs").await?;
        for _ in 0..outputs {
            for _ in 0..4 {
                r.skip_string("derivation output").await?;
            }
        }
        read_field::<Vec<String>, _>(r, "input sources").await?;
        r.skip_string("platform").await?;
        r.skip_string("builder").await?;
        read_field::<Vec<String>, _>(r, "arguments").await?;
        let env = r.list_len("environment").await?;
        for _ in 0..env * 2 {
            r.skip_string("environment entry").await?;
        }
        r.u64().await?; // build mode
    }
);
write_request!(
    /// Collect garbage.
    CollectGarbage {}
    subject: |_| None;
    drain: |r| {
        r.u64().await?; // action
        read_field::<Vec<String>, _>(r, "paths to delete").await?;
        r.u64().await?; // ignoreLiveness
        r.u64().await?; // maxFreed
        for _ in 0..3 {
            r.u64().await?; // obsolete
        }
    }
);
write_request!(
    /// Register a realisation (before 1.31 the id and an output path).
    RegisterDrvOutput { id: "realisation" }
    subject: |q| Some(&q.id);
    drain: |r| {
        if !r.version().at_least(31) {
            r.skip_string("output path").await?;
        }
    }
);
write_request!(
    /// Import paths: the data comes only on STDERR_READ, which we never send.
    ImportPaths {}
    subject: |_| None;
    drain: |_r| {}
);
write_request!(
    /// Export a path (obsolete).
    ExportPath { path: "store path" }
    subject: |q| Some(&q.path);
    drain: |r| {
        r.u64().await?; // obsolete sign flag
    }
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Limits;
    use crate::ProtoVersion;

    /// Encode `q` with its op word, decode it through `read_request`.
    async fn through_read_request<Q: Request + Clone>(q: Q, v: ProtoVersion) -> AnyRequest {
        let mut b = WireBuf::new(v);
        q.encode(&mut b);
        let mut r = WireReader::new(std::io::Cursor::new(b.0), Limits::default()).with_version(v);
        let got = read_request(&mut r, Q::OP).await.unwrap();
        assert!(
            matches!(r.u64().await, Err(ProtocolError::Eof)),
            "{}: bytes left",
            Q::OP.name()
        );
        assert_eq!(got.op(), Q::OP);
        got
    }

    #[tokio::test]
    async fn read_requests_round_trip_per_version() {
        let p = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x".to_string();
        for v in [ProtoVersion(21), ProtoVersion(22), ProtoVersion(27), ProtoVersion(38)] {
            let q = QueryValidPaths {
                paths: vec![p.clone()],
                substitute: v.at_least(27),
            };
            match through_read_request(q.clone(), v).await {
                AnyRequest::QueryValidPaths(got) => assert_eq!(got, q),
                other => panic!("{other:?}"),
            }
            let q = QuerySubstitutablePathInfos {
                paths: vec![(p.clone(), v.at_least(22).then(|| "text:sha256:x".to_string()))],
            };
            match through_read_request(q.clone(), v).await {
                AnyRequest::QuerySubstitutablePathInfos(got) => assert_eq!(got, q),
                other => panic!("{other:?}"),
            }
            let q = SetOptions {
                verbosity: 3,
                build_settings: [1, 2, 3, 4, 5, 6, 7, 8],
                overrides: vec![("a".into(), "b".into())],
                ..Default::default()
            };
            match through_read_request(q.clone(), v).await {
                AnyRequest::SetOptions(got) => assert_eq!(got, q),
                other => panic!("{other:?}"),
            }
            let q = BuildPaths {
                paths: vec![format!("{p}.drv!out").into()],
                mode: BuildMode::CHECK,
                bare_drv_means_outputs: !v.at_least(30),
            };
            match through_read_request(q.clone(), v).await {
                AnyRequest::BuildPaths(got) => assert_eq!(got, q),
                other => panic!("{other:?}"),
            }
            let q = AddPermRoot {
                path: p.clone(),
                gc_root: "/tmp/r".into(),
            };
            assert_eq!(through_read_request(q, v).await.subject(), Some(p.as_str()));
        }
    }

    #[tokio::test]
    async fn write_requests_keep_their_subject_and_drain_the_rest() {
        let mut rest = WireBuf::default();
        rest.str("").strings(["r"]).u64(0).u64(3);
        rest.0.extend_from_slice(b"abc");
        rest.u64(0);
        let q = AddToStore {
            name: "n".into(),
            rest: rest.0,
        };
        let got = through_read_request(q, ProtoVersion(38)).await;
        assert_eq!(got.subject(), Some("n"));
        match got {
            AnyRequest::AddToStore(got) => assert!(got.rest.is_empty()),
            other => panic!("{other:?}"),
        }
    }

    /// A request's flags are booleans like any other: 0 or 1, named.
    #[tokio::test]
    async fn request_flags_are_read_as_booleans() {
        let mut b = WireBuf::default();
        b.u64(1).u64(2);
        let mut r = WireReader::new(std::io::Cursor::new(b.0), Limits::default());
        assert!(matches!(
            read_request(&mut r, Op::VerifyStore).await,
            Err(ProtocolError::BadBool {
                what: "repair",
                value: 2
            })
        ));
        let mut b = WireBuf::default();
        b.u64(0).u64(2);
        let mut r = WireReader::new(std::io::Cursor::new(b.0), Limits::default()).with_version(ProtoVersion(27));
        assert!(matches!(
            read_request(&mut r, Op::QueryValidPaths).await,
            Err(ProtocolError::BadBool {
                what: "substitute",
                value: 2
            })
        ));
    }
}
