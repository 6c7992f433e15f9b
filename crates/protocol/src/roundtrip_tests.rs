//! Round-trip property tests of every [`Wire`] type: for random values at
//! each protocol version the daemon serves (1.21 through 1.38), decoding
//! the encoding gives the value back and consumes exactly its bytes; every
//! strict prefix of an encoding fails to decode (with an error, never a
//! panic); and random bytes never make a decoder panic.
//!
//! The generator is a seeded `fastrand::Rng` that carries the version its
//! values are made for (as the reader and the buffer carry theirs), so every
//! run checks the same values and a failure names the seed, the version and
//! the value. Values
//! respect each layout's version gates (a field a version does not carry is
//! left at its default), since those fields cannot survive the trip.
//! Request and reply types are enumerated through `for_each_op!`, so an op
//! added without a generator here does not compile.

use std::fmt::Debug;

use fastrand::Rng;

use super::codec::*;
use super::request::*;
use super::wire::{Limits, ProtocolError, WireBuf, WireReader};
use super::ProtoVersion;

/// Random values per type and version.
const CASES: usize = 8;
const SEED: u64 = 0x5eed_0013;

/// The seeded generator and the version the values are made for.
struct Gen {
    rng: Rng,
    v: ProtoVersion,
}

impl Gen {
    fn new(seed: u64) -> Self {
        Gen {
            rng: Rng::with_seed(seed),
            v: ProtoVersion::LATEST,
        }
    }
}

impl std::ops::Deref for Gen {
    type Target = Rng;
    fn deref(&self) -> &Rng {
        &self.rng
    }
}

impl std::ops::DerefMut for Gen {
    fn deref_mut(&mut self) -> &mut Rng {
        &mut self.rng
    }
}

/// A random value of a wire type, valid at the generator's version; `None`
/// for a type that has no values (a reply the daemon never sends).
trait Arb: Wire + PartialEq + Debug + Sized {
    fn arb(g: &mut Gen) -> Option<Self>;
    /// What decoding the encoding gives back (write requests drop the
    /// payload they drain).
    fn decoded(&self) -> Self;
}

// ---- Small generators -------------------------------------------------------

/// A string whose length is often at or near a multiple of 8 (padding).
fn text(g: &mut Rng) -> String {
    let len = match g.u8(0..4) {
        0 => g.usize(0..3),
        1 => [7usize, 8, 9, 15, 16, 17][g.usize(0..6)],
        _ => g.usize(0..40),
    };
    (0..len)
        .map(|_| match g.u8(0..10) {
            0 => 'é',
            1 => '大',
            2 => '\0',
            _ => g.alphanumeric(),
        })
        .collect()
}

fn nonempty(g: &mut Rng) -> String {
    let mut s = text(g);
    if s.is_empty() {
        s.push('x');
    }
    s
}

fn texts(g: &mut Rng) -> Vec<String> {
    (0..g.usize(0..5)).map(|_| text(g)).collect()
}

/// An optional string as the wire carries it: `Some` is never empty.
fn opt(g: &mut Rng) -> Option<String> {
    g.bool().then(|| nonempty(g))
}

fn word(g: &mut Rng) -> u64 {
    match g.u8(0..4) {
        0 => g.u64(0..3),
        1 => u64::MAX,
        _ => g.u64(..),
    }
}

fn pairs(g: &mut Rng) -> Vec<(String, String)> {
    (0..g.usize(0..4)).map(|_| (text(g), text(g))).collect()
}

// ---- Plain values -----------------------------------------------------------

/// A request of one string field (`one_string_request!` implements this), so
/// a new op of that shape is round-trip tested without a line here.
pub(super) trait OneString: Wire + Clone + PartialEq + Debug {
    fn with(text: String) -> Self;
}

impl<T: OneString> Arb for T {
    fn arb(g: &mut Gen) -> Option<Self> {
        Some(T::with(text(g)))
    }
    fn decoded(&self) -> Self {
        self.clone()
    }
}

macro_rules! arb_plain {
    ($($ty:ty => |$g:ident, $v:ident| $e:expr;)*) => {$(
        impl Arb for $ty {
            #[allow(unused_variables)]
            fn arb(g: &mut Gen) -> Option<Self> {
                let $v = g.v;
                let $g: &mut Rng = g;
                Some($e)
            }
            fn decoded(&self) -> Self {
                self.clone()
            }
        }
    )*};
}

fn path_info(g: &mut Rng, v: ProtoVersion) -> UnkeyedValidPathInfo {
    let new = v.at_least(16);
    UnkeyedValidPathInfo {
        deriver: opt(g),
        nar_hash: text(g),
        references: texts(g),
        registration_time: word(g),
        nar_size: word(g),
        ultimate: new && g.bool(),
        sigs: if new { texts(g) } else { vec![] },
        ca: if new { opt(g) } else { None },
    }
}

fn error_frame(g: &mut Rng, v: ProtoVersion) -> ErrorFrame {
    let mut e = ErrorFrame::new(text(g));
    if v.at_least(26) {
        e.level = word(g);
        e.traces = (0..g.usize(0..3)).map(|_| (word(g), text(g))).collect();
    } else {
        e.status = word(g);
    }
    e
}

fn fields(g: &mut Rng) -> Fields {
    Fields(
        (0..g.usize(0..4))
            .map(|_| {
                if g.bool() {
                    Field::Int(word(g))
                } else {
                    Field::String(text(g))
                }
            })
            .collect(),
    )
}

fn stderr_frame(g: &mut Rng, v: ProtoVersion) -> StderrFrame {
    match g.u8(0..6) {
        0 => StderrFrame::Next(text(g)),
        1 => StderrFrame::Last,
        2 => StderrFrame::Error(error_frame(g, v)),
        3 => StderrFrame::StartActivity {
            id: word(g),
            level: word(g),
            kind: word(g),
            text: text(g),
            fields: fields(g),
            parent: word(g),
        },
        4 => StderrFrame::StopActivity { id: word(g) },
        _ => StderrFrame::Result {
            id: word(g),
            kind: word(g),
            fields: fields(g),
        },
    }
}

fn realisations(g: &mut Rng, v: ProtoVersion) -> Realisations {
    let one = |g: &mut Rng| match v.at_least(31) {
        true => WireRealisation {
            json: text(g),
            out_path: String::new(),
        },
        false => WireRealisation {
            json: String::new(),
            out_path: text(g),
        },
    };
    Realisations((0..g.usize(0..3)).map(|_| one(g)).collect())
}

fn trust(g: &mut Rng) -> Option<TrustedFlag> {
    [None, Some(TrustedFlag::Trusted), Some(TrustedFlag::NotTrusted)][g.usize(0..3)]
}

fn substitutable(g: &mut Rng) -> SubstitutablePathInfo {
    SubstitutablePathInfo {
        deriver: opt(g),
        references: texts(g),
        download_size: word(g),
        nar_size: word(g),
    }
}

arb_plain! {
    u64 => |g, v| word(g);
    bool => |g, v| g.bool();
    String => |g, v| text(g);
    Vec<String> => |g, v| texts(g);
    Option<String> => |g, v| opt(g);
    () => |g, v| ();
    UnkeyedValidPathInfo => |g, v| path_info(g, v);
    ValidPathInfo => |g, v| ValidPathInfo { path: text(g), info: path_info(g, v) };
    Option<UnkeyedValidPathInfo> => |g, v| g.bool().then(|| path_info(g, v));
    OutputMap => |g, v| OutputMap((0..g.usize(0..4)).map(|_| (text(g), opt(g))).collect());
    Missing => |g, v| Missing {
        will_build: texts(g),
        will_substitute: texts(g),
        unknown: texts(g),
        download_size: word(g),
        nar_size: word(g),
    };
    Realisations => |g, v| realisations(g, v);
    BuildMode => |g, v| BuildMode(word(g));
    Fields => |g, v| fields(g);
    StderrFrame => |g, v| stderr_frame(g, v);
    ClientMagic => |g, v| ClientMagic(word(g));
    ServerHello => |g, v| ServerHello { version: word(g) };
    ClientVersion => |g, v| ClientVersion(word(g));
    Features => |g, v| Features(texts(g));
    ClientObsolete => |g, v| ClientObsolete { cpu_affinity: g.bool().then(|| word(g)), reserve_space: g.bool() };
    Option<TrustedFlag> => |g, v| trust(g);
    ServerInfo => |g, v| ServerInfo {
        daemon_version: v.at_least(33).then(|| text(g)),
        trust: if v.at_least(35) { trust(g) } else { None },
    };
    Option<SubstitutablePathInfo> => |g, v| g.bool().then(|| substitutable(g));
    SubstitutablePathInfos => |g, v| SubstitutablePathInfos((0..g.usize(0..3)).map(|_| (text(g), substitutable(g))).collect());
    Roots => |g, v| Roots(pairs(g));
    NarFollows => |g, v| NarFollows;
    // Requests with fields kept in full.
    QueryAllValidPaths => |g, v| QueryAllValidPaths;
    QueryValidPaths => |g, v| QueryValidPaths { paths: texts(g), substitute: v.at_least(27) && g.bool() };
    QueryMissing => |g, v| QueryMissing { targets: derived(g), bare_drv_means_outputs: !v.at_least(30) };
    QuerySubstitutablePaths => |g, v| QuerySubstitutablePaths { paths: texts(g) };
    QuerySubstitutablePathInfos => |g, v| QuerySubstitutablePathInfos {
        paths: (0..g.usize(0..4)).map(|_| (text(g), if v.at_least(22) { opt(g) } else { None })).collect(),
    };
    SetOptions => |g, v| SetOptions {
        keep_failed: word(g),
        keep_going: word(g),
        try_fallback: word(g),
        verbosity: word(g),
        build_settings: std::array::from_fn(|_| word(g)),
        overrides: pairs(g),
    };
    SyncWithGC => |g, v| SyncWithGC;
    FindRoots => |g, v| FindRoots;
    OptimiseStore => |g, v| OptimiseStore;
    AddPermRoot => |g, v| AddPermRoot { path: text(g), gc_root: text(g) };
    VerifyStore => |g, v| VerifyStore { check_contents: g.bool(), repair: g.bool() };
    BuildPaths => |g, v| BuildPaths { paths: derived(g), mode: BuildMode(word(g)), bare_drv_means_outputs: !v.at_least(30) };
    BuildPathsWithResults => |g, v| BuildPathsWithResults {
        paths: derived(g),
        mode: BuildMode(word(g)),
        bare_drv_means_outputs: !v.at_least(30),
    };
}

impl Arb for NoReply {
    fn arb(_: &mut Gen) -> Option<Self> {
        None
    }
    fn decoded(&self) -> Self {
        match *self {}
    }
}

// ---- Write requests: kept fields, then a valid payload that decoding drains --

fn framed(out: &mut WireBuf, g: &mut Rng) {
    for _ in 0..g.usize(0..3) {
        let n = g.usize(1..20);
        out.u64(n as u64);
        out.0.extend((0..n).map(|_| g.u8(..)));
    }
    out.u64(0);
}

/// A small NAR: a regular file, optionally executable, or a directory
/// holding one.
fn nar(out: &mut WireBuf, g: &mut Rng) {
    let file = |out: &mut WireBuf, g: &mut Rng| {
        out.str("(").str("type").str("regular");
        if g.bool() {
            out.str("executable").str("");
        }
        out.str("contents").str(&text(g)).str(")");
    };
    out.str("nix-archive-1");
    if g.bool() {
        file(out, g);
    } else {
        out.str("(").str("type").str("directory");
        out.str("entry").str("(").str("name").str("f").str("node");
        file(out, g);
        out.str(")").str(")");
    }
}

/// Random texts as derived paths (parsed as the decoder parses them).
fn derived(g: &mut Rng) -> Vec<DerivedPath> {
    texts(g).into_iter().map(DerivedPath::parse).collect()
}

fn strings(out: &mut WireBuf, g: &mut Rng) {
    texts(g).encode(out);
}

fn payload(op: Op, g: &mut Rng, v: ProtoVersion) -> Vec<u8> {
    let mut o = WireBuf::new(v);
    match op {
        Op::AddToStore if v.at_least(25) => {
            o.str(&text(g));
            strings(&mut o, g);
            o.u64(word(g));
            framed(&mut o, g);
        }
        Op::AddToStore => {
            o.u64(word(g)).u64(word(g)).str(&text(g));
            nar(&mut o, g);
        }
        Op::AddTextToStore => {
            o.str(&text(g));
            strings(&mut o, g);
        }
        Op::AddToStoreNar => add_to_store_nar(&mut o, g, v),
        Op::AddMultipleToStore => {
            o.u64(word(g)).u64(word(g));
            framed(&mut o, g);
        }
        Op::AddBuildLog => framed(&mut o, g),
        Op::AddSignatures => strings(&mut o, g),
        Op::BuildDerivation => build_derivation(&mut o, g),
        Op::CollectGarbage => {
            o.u64(word(g));
            strings(&mut o, g);
            o.u64(word(g)).u64(word(g)).u64(word(g)).u64(word(g)).u64(word(g));
        }
        Op::RegisterDrvOutput if !v.at_least(31) => {
            o.str(&text(g));
        }
        Op::ExportPath => {
            o.u64(word(g));
        }
        _ => {}
    }
    o.0
}

fn add_to_store_nar(o: &mut WireBuf, g: &mut Rng, v: ProtoVersion) {
    o.str(&text(g)).str(&text(g));
    strings(o, g);
    o.u64(word(g)).u64(word(g)).u64(word(g));
    strings(o, g);
    o.str(&text(g)).u64(word(g)).u64(word(g));
    if v.at_least(23) {
        framed(o, g);
    }
}

fn build_derivation(o: &mut WireBuf, g: &mut Rng) {
    let outputs = g.u64(0..3);
    o.u64(outputs);
    for _ in 0..outputs * 4 {
        o.str(&text(g));
    }
    strings(o, g);
    o.str(&text(g)).str(&text(g));
    strings(o, g);
    let env = g.u64(0..3);
    o.u64(env);
    for _ in 0..env * 2 {
        o.str(&text(g));
    }
    o.u64(word(g));
}

macro_rules! arb_write {
    ($($ty:ident { $($kept:ident),* })*) => {$(
        impl Arb for $ty {
            fn arb(g: &mut Gen) -> Option<Self> {
                let v = g.v;
                Some($ty { $($kept: text(g),)* rest: payload(Op::$ty, g, v) })
            }
            fn decoded(&self) -> Self {
                let mut d = self.clone();
                d.rest = Vec::new();
                d
            }
        }
    )*};
}

arb_write! {
    AddToStore { name }
    AddTextToStore { name }
    AddToStoreNar { path }
    AddMultipleToStore {}
    AddBuildLog { path }
    AddSignatures { path }
    BuildDerivation { path }
    CollectGarbage {}
    RegisterDrvOutput { id }
    ImportPaths {}
    ExportPath { path }
}

// ---- The properties ------------------------------------------------------------

fn reader(bytes: &[u8], limits: Limits, v: ProtoVersion) -> WireReader<std::io::Cursor<Vec<u8>>> {
    WireReader::new(std::io::Cursor::new(bytes.to_vec()), limits).with_version(v)
}

/// Encode → decode is the identity (up to [`Arb::decoded`]) and consumes
/// every byte; every strict prefix is an error.
async fn round_trip<T: Arb>(g: &mut Gen, ty: &str) {
    let v = g.v;
    let Some(value) = T::arb(g) else {
        return;
    };
    let bytes = to_bytes(&value, v);
    let mut r = reader(&bytes, Limits::default(), v);
    let got = T::decode(&mut r)
        .await
        .unwrap_or_else(|e| panic!("{ty} at {v}: {value:?} does not decode: {e}"));
    assert_eq!(got, value.decoded(), "{ty} at {v}: round trip");
    assert!(
        matches!(r.u64().await, Err(ProtocolError::Eof)),
        "{ty} at {v}: {value:?}: bytes left after decoding"
    );
    for cut in 0..bytes.len() {
        let mut r = reader(&bytes[..cut], Limits::default(), v);
        let res = T::decode(&mut r).await;
        assert!(res.is_err(), "{ty} at {v}: {value:?} truncated to {cut} bytes decoded");
    }
}

/// Random words (small ones, so lengths are often plausible) and bytes:
/// decoding may fail, never panic.
async fn garbage<T: Arb>(g: &mut Gen) {
    let mut b = WireBuf::default();
    for _ in 0..g.usize(0..12) {
        match g.u8(0..3) {
            0 => b.u64(g.u64(0..24)),
            1 => b.u64(word(g)),
            _ => b.str(&text(g)),
        };
    }
    let limits = Limits {
        max_string: 4096,
        max_list: 64,
    };
    let _ = T::decode(&mut reader(&b.0, limits, g.v)).await;
}

async fn check<T: Arb>(g: &mut Gen, ty: &str) {
    for minor in ProtoVersion::MINIMUM.0..=ProtoVersion::LATEST.0 {
        g.v = ProtoVersion(minor);
        for _ in 0..CASES {
            round_trip::<T>(g, ty).await;
            garbage::<T>(g).await;
        }
    }
}

macro_rules! check_types {
    ($g:ident; $($ty:ty),* $(,)?) => {
        $( check::<$ty>(&mut $g, stringify!($ty)).await; )*
    };
}

#[tokio::test]
async fn roundtrip_codec_values() {
    let mut g = Gen::new(SEED);
    check_types!(g;
        u64, bool, String, Vec<String>, Option<String>, (),
        UnkeyedValidPathInfo, ValidPathInfo, Option<UnkeyedValidPathInfo>,
        OutputMap, Missing, Realisations, BuildMode, Fields, StderrFrame,
        ClientMagic, ServerHello, ClientVersion, Features, ClientObsolete, Option<TrustedFlag>, ServerInfo,
        Option<SubstitutablePathInfo>, SubstitutablePathInfos, Roots, NarFollows,
    );
}

macro_rules! check_ops {
    ($($name:ident = $num:literal,)*) => {{
        let mut g = Gen::new(SEED + 1);
        $(
            check::<$name>(&mut g, stringify!($name)).await;
            check::<<$name as Request>::Reply>(&mut g, concat!(stringify!($name), " reply")).await;
        )*
    }};
}

/// Every op's request and reply, through the op table itself.
#[tokio::test]
async fn roundtrip_every_request_and_reply() {
    for_each_op!(check_ops);
}
