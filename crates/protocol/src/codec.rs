//! Typed wire values: one [`Wire`] impl per value the daemon speaks, used by
//! the server, the test client, the benches and the fuzz targets alike, so
//! no layout is written twice.
//!
//! Invariants:
//! - every layout is written once, here or in `request.rs`, and built on the
//!   primitives of [`super::wire`] (which computes the 8-byte padding);
//! - the negotiated version travels with the [`WireReader`] and the
//!   [`WireBuf`]; version gates live in the type that owns the gated fields
//!   (path infos before 1.16, the STDERR_ERROR layout before 1.26,
//!   realisations before 1.31, the handshake's features, daemon version and
//!   trust words) and ask the reader or buffer;
//! - collections are generic ([`Labelled`] for `Vec`, `BTreeSet`, pairs and
//!   optional paths): a list's length is checked against
//!   [`super::wire::Limits`] before anything is allocated for it, and every
//!   kept string carries a label that names it in errors;
//! - a boolean is read one way, [`WireReader::bool`] (0 or 1).
//!
//! Values stay at the wire level (store paths are full path strings), so
//! they compare directly with Nix's own encodings; validating a path is the
//! handler's job.

use std::collections::BTreeSet;
use std::future::Future;

use tokio::io::AsyncRead;

use super::wire::{ProtocolError, WireBuf, WireReader};
use super::{ProtoVersion, WORKER_MAGIC_1, WORKER_MAGIC_2};
use snix_lower_store_types::derived_path::DerivedPath;
use snix_lower_store_types::path_info::PathInfo;
use snix_lower_store_types::{StoreDir, StorePath};

/// A value with one wire layout (possibly depending on the negotiated
/// version, which the buffer and the reader carry): `encode` appends it to
/// a reply or request being assembled, `decode` reads it back, bounded by
/// the reader's limits.
///
/// Hand-written rather than derived: the layouts are few, several are
/// version-gated or need labels for bounded decoding, and a derive would
/// hide exactly those details.
pub trait Wire: Sized + Send {
    /// Append the wire form of `self` at `out`'s version.
    fn encode(&self, out: &mut WireBuf);
    /// Read one value at `r`'s version.
    fn decode<R: AsyncRead + Unpin + Send>(
        r: &mut WireReader<R>,
    ) -> impl Future<Output = Result<Self, ProtocolError>> + Send;
}

/// A value inside another (a field, a list element, half of a pair): the
/// container names it, and that label is what a decoding error shows. Lists
/// and pairs pass their label on to their elements.
pub trait Labelled: Sized + Send + Sync {
    /// Append the wire form of `self` at `out`'s version.
    fn put(&self, out: &mut WireBuf);
    /// Read one value at `r`'s version; errors name `what`.
    fn read<R: AsyncRead + Unpin + Send>(
        r: &mut WireReader<R>,
        what: &'static str,
    ) -> impl Future<Output = Result<Self, ProtocolError>> + Send;
}

/// Read a [`Labelled`] value whose type the caller's context says (a
/// field, a binding): `let refs: Vec<String> = read_field(r, "references")`.
pub async fn read_field<T: Labelled, R: AsyncRead + Unpin + Send>(
    r: &mut WireReader<R>,
    what: &'static str,
) -> Result<T, ProtocolError> {
    T::read(r, what).await
}

impl Labelled for u64 {
    fn put(&self, out: &mut WireBuf) {
        out.u64(*self);
    }
    /// A number has no length to bound: nothing to name.
    async fn read<R: AsyncRead + Unpin + Send>(r: &mut WireReader<R>, _: &'static str) -> Result<Self, ProtocolError> {
        r.u64().await
    }
}

impl Labelled for bool {
    fn put(&self, out: &mut WireBuf) {
        out.bool(*self);
    }
    async fn read<R: AsyncRead + Unpin + Send>(
        r: &mut WireReader<R>,
        what: &'static str,
    ) -> Result<Self, ProtocolError> {
        r.bool(what).await
    }
}

/// A store path or plain string: its text on the wire.
impl<P: WirePath> Labelled for P {
    fn put(&self, out: &mut WireBuf) {
        self.put_text(out);
    }
    async fn read<R: AsyncRead + Unpin + Send>(
        r: &mut WireReader<R>,
        what: &'static str,
    ) -> Result<Self, ProtocolError> {
        P::from_text(r.string(what).await?)
    }
}

/// An optional store path (or content address): the empty string is none.
impl<P: WirePath> Labelled for Option<P> {
    fn put(&self, out: &mut WireBuf) {
        match self {
            Some(p) => p.put_text(out),
            None => {
                out.str("");
            }
        }
    }
    async fn read<R: AsyncRead + Unpin + Send>(
        r: &mut WireReader<R>,
        what: &'static str,
    ) -> Result<Self, ProtocolError> {
        match r.string(what).await? {
            s if s.is_empty() => Ok(None),
            s => Ok(Some(P::from_text(s)?)),
        }
    }
}

/// Entries reserved before reading a list: a claimed length, already under
/// `max_list`, is not trusted with more.
const PREALLOC: u64 = 1024;

/// A list (Nix's `std::vector`, and a map in its order as a list of
/// pairs): the length, checked before allocating, then the elements.
impl<T: Labelled> Labelled for Vec<T> {
    fn put(&self, out: &mut WireBuf) {
        out.u64(self.len() as u64);
        for x in self {
            x.put(out);
        }
    }
    async fn read<R: AsyncRead + Unpin + Send>(
        r: &mut WireReader<R>,
        what: &'static str,
    ) -> Result<Self, ProtocolError> {
        let n = r.list_len(what).await?;
        let mut v = Vec::with_capacity(n.min(PREALLOC) as usize);
        for _ in 0..n {
            v.push(T::read(r, what).await?);
        }
        Ok(v)
    }
}

/// A set (Nix's `std::set`): the list layout, written in order. Decoding
/// keeps each distinct element once.
impl<T: Labelled + Ord> Labelled for BTreeSet<T> {
    fn put(&self, out: &mut WireBuf) {
        out.u64(self.len() as u64);
        for x in self {
            x.put(out);
        }
    }
    async fn read<R: AsyncRead + Unpin + Send>(
        r: &mut WireReader<R>,
        what: &'static str,
    ) -> Result<Self, ProtocolError> {
        let n = r.list_len(what).await?;
        let mut s = BTreeSet::new();
        for _ in 0..n {
            s.insert(T::read(r, what).await?);
        }
        Ok(s)
    }
}

/// A pair (a map entry): first, then second.
impl<A: Labelled, B: Labelled> Labelled for (A, B) {
    fn put(&self, out: &mut WireBuf) {
        self.0.put(out);
        self.1.put(out);
    }
    async fn read<R: AsyncRead + Unpin + Send>(
        r: &mut WireReader<R>,
        what: &'static str,
    ) -> Result<Self, ProtocolError> {
        let a = A::read(r, what).await?;
        let b = B::read(r, what).await?;
        Ok((a, b))
    }
}

/// Values that are whole replies as they are: their [`Labelled`] layout,
/// named by the label given here.
macro_rules! wire_as_labelled {
    ($($ty:ty => $what:literal,)*) => {$(
        impl Wire for $ty {
            fn encode(&self, out: &mut WireBuf) {
                self.put(out);
            }
            async fn decode<R: AsyncRead + Unpin + Send>(r: &mut WireReader<R>) -> Result<Self, ProtocolError> {
                <$ty as Labelled>::read(r, $what).await
            }
        }
    )*};
}

wire_as_labelled! {
    u64 => "number",
    bool => "boolean",
    String => "string",
    Option<String> => "optional store path",
    BuildMode => "build mode",
}

/// A list (or set: the same layout) of strings or store paths.
impl<P: WirePath> Wire for Vec<P> {
    fn encode(&self, out: &mut WireBuf) {
        self.put(out);
    }
    async fn decode<R: AsyncRead + Unpin + Send>(r: &mut WireReader<R>) -> Result<Self, ProtocolError> {
        Self::read(r, "string list").await
    }
}

/// A reply with nothing after STDERR_LAST (SetOptions).
impl Wire for () {
    fn encode(&self, _: &mut WireBuf) {}
    async fn decode<R: AsyncRead + Unpin + Send>(_: &mut WireReader<R>) -> Result<Self, ProtocolError> {
        Ok(())
    }
}

/// A store path inside a value: the full path text on the wire. `String`
/// is what decoding gives; the daemon encodes [`Shown`] paths, which write
/// the text straight into the reply.
pub trait WirePath: Sized + Send + Sync + std::fmt::Debug {
    fn put_text(&self, out: &mut WireBuf);
    /// The path from its decoded text.
    fn from_text(text: String) -> Result<Self, ProtocolError>;
}

impl WirePath for String {
    fn put_text(&self, out: &mut WireBuf) {
        out.str(self);
    }
    fn from_text(text: String) -> Result<Self, ProtocolError> {
        Ok(text)
    }
}

/// A derived path (`path`, or `drv!out1,out2`, `drv!*`): its text on the
/// wire, parsed once as it is decoded.
impl WirePath for DerivedPath {
    fn put_text(&self, out: &mut WireBuf) {
        out.str(self.as_str());
    }
    fn from_text(text: String) -> Result<Self, ProtocolError> {
        Ok(DerivedPath::parse(text))
    }
}

/// A store path shown under its store dir, for encoding only: no string is
/// built per path on the reply path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shown {
    pub dir: StoreDir,
    pub path: StorePath,
}

impl WirePath for Shown {
    fn put_text(&self, out: &mut WireBuf) {
        out.dir_entry(self.dir.as_str(), self.path.base_name());
    }
    fn from_text(_: String) -> Result<Self, ProtocolError> {
        Err(ProtocolError::Malformed(
            "a shown store path is encoded by the daemon, not decoded; decode into String".into(),
        ))
    }
}

/// Nix's `UnkeyedValidPathInfo`: a path info without its own path. The
/// fields from `ultimate` on exist from protocol 1.16. `P` is how store
/// paths are held: full path strings (decoding, tests) or [`Shown`] (the
/// daemon's replies); the layout is the same.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnkeyedValidPathInfo<P = String> {
    /// Full store path of the deriver, if known.
    pub deriver: Option<P>,
    /// SHA-256 of the NAR, base16, without the `sha256:` prefix.
    pub nar_hash: String,
    /// Full store paths, sorted.
    pub references: Vec<P>,
    /// Seconds since the epoch.
    pub registration_time: u64,
    pub nar_size: u64,
    pub ultimate: bool,
    pub sigs: Vec<String>,
    /// Content address (`text:sha256:…`, `fixed:…`), if content-addressed.
    pub ca: Option<String>,
}

/// Nix's `UnkeyedValidPathInfo` of a backend's path info, paths shown under
/// `sd`: the one place the model becomes the wire form (QueryPathInfo's
/// reply; the codec benchmark measures it with the encoding).
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

impl<P: WirePath> Wire for UnkeyedValidPathInfo<P> {
    fn encode(&self, out: &mut WireBuf) {
        self.deriver.put(out);
        out.str(&self.nar_hash);
        self.references.put(out);
        out.u64(self.registration_time).u64(self.nar_size);
        if out.version().at_least(16) {
            self.ultimate.put(out);
            self.sigs.put(out);
            self.ca.put(out);
        }
    }
    async fn decode<R: AsyncRead + Unpin + Send>(r: &mut WireReader<R>) -> Result<Self, ProtocolError> {
        let mut info = UnkeyedValidPathInfo {
            deriver: read_field(r, "deriver").await?,
            nar_hash: r.string("narHash").await?,
            references: read_field(r, "references").await?,
            registration_time: r.u64().await?,
            nar_size: r.u64().await?,
            ultimate: false,
            sigs: Vec::new(),
            ca: None,
        };
        if r.version().at_least(16) {
            info.ultimate = r.bool("ultimate").await?;
            info.sigs = read_field(r, "signatures").await?;
            info.ca = read_field(r, "content address").await?;
        }
        Ok(info)
    }
}

/// Nix's `ValidPathInfo`: the store path, then its unkeyed info.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ValidPathInfo {
    pub path: String,
    pub info: UnkeyedValidPathInfo,
}

impl Wire for ValidPathInfo {
    fn encode(&self, out: &mut WireBuf) {
        out.str(&self.path);
        self.info.encode(out);
    }
    async fn decode<R: AsyncRead + Unpin + Send>(r: &mut WireReader<R>) -> Result<Self, ProtocolError> {
        let path = r.string("store path").await?;
        let info = UnkeyedValidPathInfo::decode(r).await?;
        Ok(ValidPathInfo { path, info })
    }
}

/// A reply that is a flag, then the value if the flag is set (Nix writes
/// these by hand in the daemon, not as an optional type): QueryPathInfo's
/// and QuerySubstitutablePathInfo's. `FLAG` names the flag in errors.
pub trait Flagged: Wire + Sync {
    const FLAG: &'static str;
}

impl<P: WirePath> Flagged for UnkeyedValidPathInfo<P> {
    const FLAG: &'static str = "valid";
}

impl<T: Flagged> Wire for Option<T> {
    fn encode(&self, out: &mut WireBuf) {
        self.is_some().put(out);
        if let Some(x) = self {
            x.encode(out);
        }
    }
    async fn decode<R: AsyncRead + Unpin + Send>(r: &mut WireReader<R>) -> Result<Self, ProtocolError> {
        match r.bool(T::FLAG).await? {
            true => Ok(Some(T::decode(r).await?)),
            false => Ok(None),
        }
    }
}

/// A derivation's output map (QueryDerivationOutputMap): output name to
/// optional full store path, in the derivation's order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutputMap(pub Vec<(String, Option<String>)>);

impl Wire for OutputMap {
    fn encode(&self, out: &mut WireBuf) {
        self.0.put(out);
    }
    async fn decode<R: AsyncRead + Unpin + Send>(r: &mut WireReader<R>) -> Result<Self, ProtocolError> {
        Ok(OutputMap(read_field(r, "derivation outputs").await?))
    }
}

/// QueryMissing's reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Missing {
    pub will_build: Vec<String>,
    pub will_substitute: Vec<String>,
    pub unknown: Vec<String>,
    pub download_size: u64,
    pub nar_size: u64,
}

impl Wire for Missing {
    fn encode(&self, out: &mut WireBuf) {
        self.will_build.put(out);
        self.will_substitute.put(out);
        self.unknown.put(out);
        out.u64(self.download_size).u64(self.nar_size);
    }
    async fn decode<R: AsyncRead + Unpin + Send>(r: &mut WireReader<R>) -> Result<Self, ProtocolError> {
        Ok(Missing {
            will_build: read_field(r, "paths to build").await?,
            will_substitute: read_field(r, "paths to substitute").await?,
            unknown: read_field(r, "unknown paths").await?,
            download_size: r.u64().await?,
            nar_size: r.u64().await?,
        })
    }
}

/// One realisation of a derivation output as QueryRealisation answers it:
/// from 1.31 its JSON text, before that only its output path. Decoding
/// fills the field of the negotiated layout and leaves the other empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WireRealisation {
    pub json: String,
    pub out_path: String,
}

impl Labelled for WireRealisation {
    fn put(&self, out: &mut WireBuf) {
        match out.version().at_least(31) {
            true => out.str(&self.json),
            false => out.str(&self.out_path),
        };
    }
    async fn read<R: AsyncRead + Unpin + Send>(
        r: &mut WireReader<R>,
        what: &'static str,
    ) -> Result<Self, ProtocolError> {
        let s = r.string(what).await?;
        Ok(match r.version().at_least(31) {
            true => WireRealisation {
                json: s,
                out_path: String::new(),
            },
            false => WireRealisation {
                json: String::new(),
                out_path: s,
            },
        })
    }
}

/// QueryRealisation's reply: a set with zero or one realisation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Realisations(pub Vec<WireRealisation>);

impl Wire for Realisations {
    fn encode(&self, out: &mut WireBuf) {
        self.0.put(out);
    }
    async fn decode<R: AsyncRead + Unpin + Send>(r: &mut WireReader<R>) -> Result<Self, ProtocolError> {
        Ok(Realisations(read_field(r, "realisations").await?))
    }
}

/// Nix's build mode word (BuildPaths, BuildDerivation). Unknown values are
/// kept, not refused: a read-only store refuses the build anyway.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BuildMode(pub u64);

impl BuildMode {
    pub const NORMAL: BuildMode = BuildMode(0);
    pub const REPAIR: BuildMode = BuildMode(1);
    pub const CHECK: BuildMode = BuildMode(2);
}

impl Labelled for BuildMode {
    fn put(&self, out: &mut WireBuf) {
        out.u64(self.0);
    }
    /// A word: nothing to name.
    async fn read<R: AsyncRead + Unpin + Send>(r: &mut WireReader<R>, _: &'static str) -> Result<Self, ProtocolError> {
        Ok(BuildMode(r.u64().await?))
    }
}

/// STDERR_* message words.
pub const STDERR_NEXT: u64 = 0x6f6c_6d67;
pub const STDERR_READ: u64 = 0x6461_7461;
pub const STDERR_WRITE: u64 = 0x6461_7416;
pub const STDERR_LAST: u64 = 0x616c_7473;
pub const STDERR_ERROR: u64 = 0x6378_7470;
pub const STDERR_START_ACTIVITY: u64 = 0x5354_5254;
pub const STDERR_STOP_ACTIVITY: u64 = 0x5354_4f50;
pub const STDERR_RESULT: u64 = 0x5253_4c54;

/// Verbosity level Nix attaches to an error (`lvlError`).
const LVL_ERROR: u64 = 0;

/// A field of an activity or result message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    Int(u64),
    String(String),
}

/// A list of activity or result fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fields(pub Vec<Field>);

/// A field: a type word (0 a number, 1 a string), then the value. The
/// string is named "activity field" whatever list holds it.
impl Labelled for Field {
    fn put(&self, out: &mut WireBuf) {
        match self {
            Field::Int(i) => out.u64(0).u64(*i),
            Field::String(s) => out.u64(1).str(s),
        };
    }
    async fn read<R: AsyncRead + Unpin + Send>(r: &mut WireReader<R>, _: &'static str) -> Result<Self, ProtocolError> {
        match r.u64().await? {
            0 => Ok(Field::Int(r.u64().await?)),
            1 => Ok(Field::String(r.string("activity field").await?)),
            t => Err(ProtocolError::Malformed(format!("unexpected: field type {t}"))),
        }
    }
}

impl Wire for Fields {
    fn encode(&self, out: &mut WireBuf) {
        self.0.put(out);
    }
    async fn decode<R: AsyncRead + Unpin + Send>(r: &mut WireReader<R>) -> Result<Self, ProtocolError> {
        Ok(Fields(read_field(r, "activity fields").await?))
    }
}

/// The error that ends an op, in either layout: before 1.26 the message and
/// an exit status; from 1.26 Nix's structured error (type, level, name,
/// message, position flag, traces).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorFrame {
    pub msg: String,
    /// Exit status (before 1.26; we send 1).
    pub status: u64,
    /// Level (from 1.26; we send `lvlError`).
    pub level: u64,
    /// Trace positions and messages (from 1.26; we send none).
    pub traces: Vec<(u64, String)>,
}

impl ErrorFrame {
    /// An error with this message, as the daemon sends it.
    pub fn new(msg: impl Into<String>) -> Self {
        ErrorFrame {
            msg: msg.into(),
            status: 1,
            level: LVL_ERROR,
            traces: Vec::new(),
        }
    }

    fn encode_body(&self, out: &mut WireBuf) {
        if out.version().at_least(26) {
            out.str("Error").u64(self.level).str("Error").str(&self.msg).u64(0);
            self.traces.put(out);
        } else {
            out.str(&self.msg).u64(self.status);
        }
    }

    async fn decode_body<R: AsyncRead + Unpin + Send>(r: &mut WireReader<R>) -> Result<Self, ProtocolError> {
        if !r.version().at_least(26) {
            let msg = r.string("msg").await?;
            let status = r.u64().await?;
            return Ok(ErrorFrame {
                status,
                ..ErrorFrame::new(msg)
            });
        }
        r.skip_string("type").await?;
        let level = r.u64().await?;
        r.skip_string("name").await?;
        let msg = r.string("msg").await?;
        if r.u64().await? != 0 {
            return Err(ProtocolError::Malformed("unexpected: error with a position".into()));
        }
        let traces = read_field(r, "traces").await?;
        Ok(ErrorFrame {
            msg,
            status: 1,
            level,
            traces,
        })
    }
}

/// One message of the STDERR stream that precedes every reply: the server
/// encodes it, the client decodes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StderrFrame {
    /// A log line, as sent (the daemon appends a newline; see [`StderrFrame::log`]).
    Next(String),
    /// The reply follows.
    Last,
    /// The op failed; no reply follows.
    Error(ErrorFrame),
    StartActivity {
        id: u64,
        level: u64,
        kind: u64,
        text: String,
        fields: Fields,
        parent: u64,
    },
    StopActivity {
        id: u64,
    },
    Result {
        id: u64,
        kind: u64,
        fields: Fields,
    },
}

impl StderrFrame {
    /// A log line the client prints (it strips one trailing newline).
    pub fn log(line: &str) -> Self {
        let mut s = String::with_capacity(line.len() + 1);
        s.push_str(line);
        s.push('\n');
        StderrFrame::Next(s)
    }

    /// An error frame with this message.
    pub fn error(msg: impl Into<String>) -> Self {
        StderrFrame::Error(ErrorFrame::new(msg))
    }
}

impl Wire for StderrFrame {
    fn encode(&self, out: &mut WireBuf) {
        match self {
            StderrFrame::Next(s) => {
                out.u64(STDERR_NEXT).str(s);
            }
            StderrFrame::Last => {
                out.u64(STDERR_LAST);
            }
            StderrFrame::Error(e) => {
                out.u64(STDERR_ERROR);
                e.encode_body(out);
            }
            StderrFrame::StartActivity {
                id,
                level,
                kind,
                text,
                fields,
                parent,
            } => {
                out.u64(STDERR_START_ACTIVITY).u64(*id).u64(*level).u64(*kind).str(text);
                fields.encode(out);
                out.u64(*parent);
            }
            StderrFrame::StopActivity { id } => {
                out.u64(STDERR_STOP_ACTIVITY).u64(*id);
            }
            StderrFrame::Result { id, kind, fields } => {
                out.u64(STDERR_RESULT).u64(*id).u64(*kind);
                fields.encode(out);
            }
        }
    }
    async fn decode<R: AsyncRead + Unpin + Send>(r: &mut WireReader<R>) -> Result<Self, ProtocolError> {
        Ok(match r.u64().await? {
            STDERR_NEXT => StderrFrame::Next(r.string("log").await?),
            STDERR_LAST => StderrFrame::Last,
            STDERR_ERROR => StderrFrame::Error(ErrorFrame::decode_body(r).await?),
            STDERR_START_ACTIVITY => StderrFrame::StartActivity {
                id: r.u64().await?,
                level: r.u64().await?,
                kind: r.u64().await?,
                text: r.string("activity").await?,
                fields: Fields::decode(r).await?,
                parent: r.u64().await?,
            },
            STDERR_STOP_ACTIVITY => StderrFrame::StopActivity { id: r.u64().await? },
            STDERR_RESULT => StderrFrame::Result {
                id: r.u64().await?,
                kind: r.u64().await?,
                fields: Fields::decode(r).await?,
            },
            other => return Err(ProtocolError::Malformed(format!("unexpected: STDERR word {other:#x}"))),
        })
    }
}

/// The client's first word: [`WORKER_MAGIC_1`] from a Nix client. Kept raw
/// so the handshake can name what it got instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientMagic(pub u64);

impl Default for ClientMagic {
    fn default() -> Self {
        ClientMagic(WORKER_MAGIC_1)
    }
}

impl Wire for ClientMagic {
    fn encode(&self, out: &mut WireBuf) {
        out.u64(self.0);
    }
    async fn decode<R: AsyncRead + Unpin + Send>(r: &mut WireReader<R>) -> Result<Self, ProtocolError> {
        Ok(ClientMagic(r.u64().await?))
    }
}

/// The daemon's answer to the magic: [`WORKER_MAGIC_2`] and its newest
/// protocol version word (`1 << 8 | minor`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerHello {
    pub version: u64,
}

impl Wire for ServerHello {
    fn encode(&self, out: &mut WireBuf) {
        out.u64(WORKER_MAGIC_2).u64(self.version);
    }
    async fn decode<R: AsyncRead + Unpin + Send>(r: &mut WireReader<R>) -> Result<Self, ProtocolError> {
        if r.u64().await? != WORKER_MAGIC_2 {
            return Err(ProtocolError::Malformed("unexpected: bad daemon magic".into()));
        }
        Ok(ServerHello {
            version: r.u64().await?,
        })
    }
}

/// The client's protocol version word, sent after the daemon's hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientVersion(pub u64);

impl Wire for ClientVersion {
    fn encode(&self, out: &mut WireBuf) {
        out.u64(self.0);
    }
    async fn decode<R: AsyncRead + Unpin + Send>(r: &mut WireReader<R>) -> Result<Self, ProtocolError> {
        Ok(ClientVersion(r.u64().await?))
    }
}

/// A feature list (1.38+): the client's, then the daemon's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Features(pub Vec<String>);

impl Wire for Features {
    fn encode(&self, out: &mut WireBuf) {
        self.0.put(out);
    }
    async fn decode<R: AsyncRead + Unpin + Send>(r: &mut WireReader<R>) -> Result<Self, ProtocolError> {
        Ok(Features(read_field(r, "client feature list").await?))
    }
}

/// Words a client still sends after the version: the CPU affinity (1.14+,
/// a flag and, if set, the CPU) and reserveSpace (1.11+).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientObsolete {
    pub cpu_affinity: Option<u64>,
    pub reserve_space: bool,
}

impl Wire for ClientObsolete {
    fn encode(&self, out: &mut WireBuf) {
        let v = out.version();
        if v.at_least(14) {
            self.cpu_affinity.is_some().put(out);
            if let Some(cpu) = self.cpu_affinity {
                out.u64(cpu);
            }
        }
        if v.at_least(11) {
            self.reserve_space.put(out);
        }
    }
    async fn decode<R: AsyncRead + Unpin + Send>(r: &mut WireReader<R>) -> Result<Self, ProtocolError> {
        let v = r.version();
        let mut o = ClientObsolete::default();
        if v.at_least(14) && r.bool("CPU affinity flag").await? {
            o.cpu_affinity = Some(r.u64().await?);
        }
        if v.at_least(11) {
            o.reserve_space = r.bool("reserveSpace").await?;
        }
        Ok(o)
    }
}

/// Whether the daemon trusts the client (1.35+): Nix's `TrustedFlag`. On
/// the wire as `Option<TrustedFlag>`: 0 unknown, 1 trusted, 2 not trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrustedFlag {
    Trusted,
    NotTrusted,
}

impl Wire for Option<TrustedFlag> {
    fn encode(&self, out: &mut WireBuf) {
        out.u64(match self {
            None => 0,
            Some(TrustedFlag::Trusted) => 1,
            Some(TrustedFlag::NotTrusted) => 2,
        });
    }
    async fn decode<R: AsyncRead + Unpin + Send>(r: &mut WireReader<R>) -> Result<Self, ProtocolError> {
        match r.u64().await? {
            0 => Ok(None),
            1 => Ok(Some(TrustedFlag::Trusted)),
            2 => Ok(Some(TrustedFlag::NotTrusted)),
            t => Err(ProtocolError::Malformed(format!("unexpected: trust word {t}"))),
        }
    }
}

/// The daemon's last handshake words before the first STDERR_LAST (Nix's
/// `ClientHandshakeInfo`): its version string (1.33+) and the trust flag
/// (1.35+; `None` there is "unknown").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerInfo {
    pub daemon_version: Option<String>,
    pub trust: Option<TrustedFlag>,
}

impl Wire for ServerInfo {
    fn encode(&self, out: &mut WireBuf) {
        let v = out.version();
        if v.at_least(33) {
            out.str(self.daemon_version.as_deref().unwrap_or(""));
        }
        if v.at_least(35) {
            self.trust.encode(out);
        }
    }
    async fn decode<R: AsyncRead + Unpin + Send>(r: &mut WireReader<R>) -> Result<Self, ProtocolError> {
        let v = r.version();
        let mut info = ServerInfo::default();
        if v.at_least(33) {
            info.daemon_version = Some(r.string("daemon version").await?);
        }
        if v.at_least(35) {
            info.trust = Option::<TrustedFlag>::decode(r).await?;
        }
        Ok(info)
    }
}

/// Encode `value` into a fresh buffer (tests, benches, the client).
pub fn to_bytes<T: Wire>(value: &T, v: ProtoVersion) -> Vec<u8> {
    let mut b = WireBuf::new(v);
    value.encode(&mut b);
    b.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Limits;

    async fn round_trip<T: Wire + PartialEq + std::fmt::Debug>(value: T, v: ProtoVersion) {
        let bytes = to_bytes(&value, v);
        let mut r = WireReader::new(std::io::Cursor::new(bytes), Limits::default()).with_version(v);
        assert_eq!(T::decode(&mut r).await.unwrap(), value, "at {v}");
        assert!(matches!(r.u64().await, Err(ProtocolError::Eof)), "bytes left at {v}");
    }

    fn info() -> UnkeyedValidPathInfo {
        UnkeyedValidPathInfo {
            deriver: Some("/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x.drv".into()),
            nar_hash: "ab".repeat(32),
            references: vec!["/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-y".into()],
            registration_time: 7,
            nar_size: 120,
            ultimate: true,
            sigs: vec!["k:s".into()],
            ca: Some("text:sha256:x".into()),
        }
    }

    fn limited(bytes: Vec<u8>) -> WireReader<std::io::Cursor<Vec<u8>>> {
        WireReader::new(
            std::io::Cursor::new(bytes),
            Limits {
                max_string: 64,
                max_list: 4,
            },
        )
    }

    /// Every generic collection checks its length before allocating, and
    /// names the list it was asked for.
    #[tokio::test]
    async fn huge_list_lengths_are_errors_not_allocations() {
        let huge = || limited(u64::MAX.to_le_bytes().to_vec());
        let too_long = |e: ProtocolError| {
            matches!(
                e,
                ProtocolError::ListTooLong {
                    what: "paths",
                    len: u64::MAX,
                    max: 4
                }
            )
        };
        assert!(too_long(
            read_field::<Vec<String>, _>(&mut huge(), "paths").await.unwrap_err()
        ));
        assert!(too_long(
            read_field::<BTreeSet<String>, _>(&mut huge(), "paths")
                .await
                .unwrap_err()
        ));
        assert!(too_long(
            read_field::<Vec<(String, String)>, _>(&mut huge(), "paths")
                .await
                .unwrap_err()
        ));
        assert!(too_long(
            read_field::<Vec<Vec<String>>, _>(&mut huge(), "paths")
                .await
                .unwrap_err()
        ));
        assert!(matches!(
            Vec::<String>::decode(&mut huge()).await,
            Err(ProtocolError::ListTooLong {
                what: "string list",
                ..
            })
        ));
        // One entry over the limit is refused too; at the limit it is read.
        let mut w = WireBuf::default();
        w.u64(5);
        assert!(matches!(
            read_field::<Vec<u64>, _>(&mut limited(w.0), "words").await,
            Err(ProtocolError::ListTooLong { len: 5, .. })
        ));
        let mut four = WireBuf::default();
        vec![1u64, 2, 3, 4].put(&mut four);
        assert_eq!(
            read_field::<Vec<u64>, _>(&mut limited(four.0), "words").await.unwrap(),
            vec![1, 2, 3, 4]
        );
    }

    /// A list's elements and a pair's halves carry the container's label.
    #[tokio::test]
    async fn elements_are_named_by_their_container() {
        let mut w = WireBuf::default();
        w.u64(1).u64(65);
        assert!(matches!(
            read_field::<Vec<String>, _>(&mut limited(w.0.clone()), "references").await,
            Err(ProtocolError::StringTooLong {
                what: "references",
                len: 65,
                max: 64
            })
        ));
        let mut w = WireBuf::default();
        w.u64(1).str("k").u64(65);
        assert!(matches!(
            read_field::<Vec<(String, String)>, _>(&mut limited(w.0), "option overrides").await,
            Err(ProtocolError::StringTooLong {
                what: "option overrides",
                ..
            })
        ));
        let mut w = WireBuf::default();
        w.u64(1).u64(2);
        assert!(matches!(
            read_field::<Vec<bool>, _>(&mut limited(w.0), "flags").await,
            Err(ProtocolError::BadBool {
                what: "flags",
                value: 2
            })
        ));
    }

    /// A set is the list layout in order; duplicates on the wire collapse.
    #[tokio::test]
    async fn sets_are_lists_in_order() {
        let set: BTreeSet<String> = ["b", "a", ""].iter().map(|s| s.to_string()).collect();
        let mut w = WireBuf::default();
        set.put(&mut w);
        let list: Vec<String> = set.iter().cloned().collect();
        assert_eq!(w.0, to_bytes(&list, ProtoVersion::LATEST));
        let mut dup = WireBuf::default();
        vec!["a".to_string(), "a".to_string()].put(&mut dup);
        let got: BTreeSet<String> = read_field(&mut limited(dup.0), "set").await.unwrap();
        assert_eq!(got.len(), 1);
    }

    /// Booleans are read one way, wherever they are: 0 or 1.
    #[tokio::test]
    async fn flags_are_zero_or_one_everywhere() {
        let two = || limited(2u64.to_le_bytes().to_vec());
        assert!(matches!(
            bool::decode(&mut two()).await,
            Err(ProtocolError::BadBool { what: "boolean", .. })
        ));
        assert!(matches!(
            ClientObsolete::decode(&mut two()).await,
            Err(ProtocolError::BadBool {
                what: "CPU affinity flag",
                ..
            })
        ));
        assert!(matches!(
            Option::<UnkeyedValidPathInfo>::decode(&mut two()).await,
            Err(ProtocolError::BadBool { what: "valid", .. })
        ));
    }

    /// The reader and the buffer carry the version: a gated layout follows
    /// it without being told.
    #[tokio::test]
    async fn the_version_travels_with_reader_and_buffer() {
        let r = limited(Vec::new());
        assert_eq!(r.version(), ProtoVersion::LATEST);
        assert_eq!(WireBuf::default().version(), ProtoVersion::LATEST);
        let mut old = WireBuf::new(ProtoVersion(15));
        info().encode(&mut old);
        assert_eq!(old.0, to_bytes(&info(), ProtoVersion(15)));
        assert_ne!(old.0, to_bytes(&info(), ProtoVersion(16)));
        let mut r = WireReader::new(std::io::Cursor::new(old.0), Limits::default());
        r.set_version(ProtoVersion(15));
        let got = UnkeyedValidPathInfo::<String>::decode(&mut r).await.unwrap();
        assert_eq!((got.ultimate, got.sigs.len(), got.ca), (false, 0, None));
        assert!(matches!(r.u64().await, Err(ProtocolError::Eof)));
    }

    #[tokio::test]
    async fn path_info_round_trips_and_is_gated_at_1_16() {
        round_trip(Some(info()), ProtoVersion(38)).await;
        round_trip(None::<UnkeyedValidPathInfo>, ProtoVersion(38)).await;
        let old = UnkeyedValidPathInfo {
            ultimate: false,
            sigs: vec![],
            ca: None,
            ..info()
        };
        round_trip(old.clone(), ProtoVersion(15)).await;
        assert_eq!(to_bytes(&info(), ProtoVersion(15)), to_bytes(&old, ProtoVersion(15)));
        round_trip(
            ValidPathInfo {
                path: "/nix/store/cccccccccccccccccccccccccccccccc-z".into(),
                info: info(),
            },
            ProtoVersion(21),
        )
        .await;
    }

    #[tokio::test]
    async fn stderr_frames_round_trip_in_both_error_layouts() {
        for v in [ProtoVersion(25), ProtoVersion(26), ProtoVersion(38)] {
            round_trip(StderrFrame::log("hello"), v).await;
            round_trip(StderrFrame::Last, v).await;
            round_trip(StderrFrame::error("no"), v).await;
            round_trip(
                StderrFrame::StartActivity {
                    id: 1,
                    level: 3,
                    kind: 105,
                    text: "building".into(),
                    fields: Fields(vec![Field::Int(4), Field::String("s".into())]),
                    parent: 0,
                },
                v,
            )
            .await;
            round_trip(StderrFrame::StopActivity { id: 1 }, v).await;
        }
    }

    #[tokio::test]
    async fn handshake_values_round_trip_per_version() {
        for minor in [10u8, 11, 14, 33, 35, 38] {
            let v = ProtoVersion(minor);
            round_trip(
                ClientObsolete {
                    cpu_affinity: v.at_least(14).then_some(3),
                    reserve_space: v.at_least(11),
                },
                v,
            )
            .await;
            round_trip(
                ServerInfo {
                    daemon_version: v.at_least(33).then(|| "d".to_string()),
                    trust: v.at_least(35).then_some(TrustedFlag::NotTrusted),
                },
                v,
            )
            .await;
        }
        round_trip(ServerHello { version: 0x126 }, ProtoVersion(38)).await;
        round_trip(Features(vec!["a".into()]), ProtoVersion(38)).await;
    }

    fn words(b: &[u8]) -> Vec<u64> {
        b.chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect()
    }

    #[test]
    fn error_layout_from_1_26() {
        // Nix's `operator<<(Sink&, const Error&)`: "Error", level, "Error",
        // message, havePos=0, number of traces=0.
        let b = to_bytes(&StderrFrame::error("no"), ProtoVersion(38));
        let w = words(&b);
        assert_eq!(w[0], STDERR_ERROR);
        assert_eq!(w[1], 5);
        assert_eq!(&b[16..21], b"Error");
        assert_eq!(w[3], 0);
        assert_eq!(w[4], 5);
        assert_eq!(w[6], 2);
        assert_eq!(&b[56..58], b"no");
        assert_eq!(&w[8..], &[0, 0]);
    }

    #[test]
    fn error_layout_before_1_26() {
        let b = to_bytes(&StderrFrame::error("bad"), ProtoVersion(25));
        assert_eq!(
            words(&b),
            vec![STDERR_ERROR, 3, u64::from_le_bytes(*b"bad\0\0\0\0\0"), 1]
        );
    }

    #[test]
    fn log_lines_get_a_newline() {
        let b = to_bytes(&StderrFrame::log("hi"), ProtoVersion(38));
        assert_eq!(words(&b)[1], 3);
    }

    #[tokio::test]
    async fn realisations_change_layout_at_1_31() {
        let new = Realisations(vec![WireRealisation {
            json: "{}".into(),
            out_path: String::new(),
        }]);
        round_trip(new, ProtoVersion(31)).await;
        let old = Realisations(vec![WireRealisation {
            json: String::new(),
            out_path: "/nix/store/p".into(),
        }]);
        round_trip(old, ProtoVersion(30)).await;
    }
}
