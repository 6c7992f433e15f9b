//! The values Nix's unit tests encode in each golden file, written out as
//! Rust data from NixOS/nix 88b09c64 `src/libstore-tests/worker-protocol.cc`
//! and `common-protocol.cc` (and, for the three files those sources no
//! longer define, from the `.json` file Nix wrote next to the `.bin`).
//!
//! Invariant: nothing here is computed by the encoders under test. Hashes
//! are written as Nix's tests write them (SRI, or `hashString` of a literal,
//! recomputed with `sha2`); the only crate code used is the store-path and
//! hash constructors, which parse, not encode wire bytes.

use base64::Engine as _;
use sha2::Digest as _;

use snix_lower_store_types::hash::nix32_encode;
use snix_lower_store_types::realisation::DrvOutputId;
use snix_lower_store_types::{NarHash, StorePath};

/// The hash part every store path in Nix's protocol tests uses.
pub(super) const HASH_PART: &str = "g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q";
/// The other hash part (`g1w7hyyyy…-foo`) of the path-info tests.
pub(super) const OTHER_HASH_PART: &str = "g1w7hyyyy1w7hy3qg1w7hy3qgqqqqy3q";
/// The store directory of every test (`"/nix/store"` in `UnkeyedValidPathInfo{…}`).
pub(super) const STORE_DIR: &str = "/nix/store";

/// `Hash::parseSRI("sha256-FePF…")`: the NAR hash of every path info and
/// the first derivation hash of the DrvOutput and realisation tests.
pub(super) const NAR_HASH_SRI: &str = "sha256-FePFYIlMuycIXPZbWi7LGEiMmZSX9FMbaQenWBzm1Sc=";
/// `Hash::parseSRI("sha256-b4af…")`: the second DrvOutput's hash.
pub(super) const DRV_HASH_2_SRI: &str = "sha256-b4afnqKCO9oWXgYHb9DeQ2berSwOjS27rSd9TxXDc/U=";
/// `hashString(HashAlgorithm::SHA1, "blob blob...")` as the `.json` prints it
/// (no SHA-1 implementation is a dependency of this crate).
pub(super) const BLOB_SHA1_SRI: &str = "sha1-gGemBoenViNZM3hiwqns/Fgzqwo=";

/// `StorePath{"g1w7hy3q…-<name>"}`.
pub(super) fn path(name: &str) -> StorePath {
    StorePath::from_base_name(&format!("{HASH_PART}-{name}")).expect("Nix's test paths are valid")
}

/// `StorePath{"g1w7hyyyy…-<name>"}`.
pub(super) fn other_path(name: &str) -> StorePath {
    StorePath::from_base_name(&format!("{OTHER_HASH_PART}-{name}")).expect("Nix's test paths are valid")
}

/// A store path as the wire carries it: store directory, `/`, base name.
pub(super) fn full(p: &StorePath) -> String {
    format!("{STORE_DIR}/{}", p.base_name())
}

pub(super) fn nar_hash() -> NarHash {
    NarHash::parse(NAR_HASH_SRI).expect("Nix's test hash is valid")
}

/// `Signature{.keyName = key, .sig = std::string(64, '\0')}` in its text form.
pub(super) fn zero_sig(key: &str) -> String {
    format!("{key}:{}", base64::engine::general_purpose::STANDARD.encode([0u8; 64]))
}

/// `string`: five strings. The last is the C++ literal
/// `"oh no \0\0\0 what was that!"`, which `std::string` cuts at the first NUL.
pub(super) const STRINGS: [&str; 5] = ["", "hi", "white rabbit", "大白兔", "oh no "];

/// `vector` (and `set`, whose sets Nix writes in sorted order): three lists
/// of strings, then a list of lists.
pub(super) fn vector_values() -> (Vec<Vec<&'static str>>, Vec<Vec<&'static str>>) {
    let flat = vec![vec![], vec![""], vec!["", "foo", "bar"]];
    let nested = vec![vec![], vec![""], vec!["", "1", "2"]];
    (flat, nested)
}

pub(super) fn set_values() -> (Vec<Vec<&'static str>>, Vec<Vec<&'static str>>) {
    let flat = vec![vec![], vec![""], vec!["", "bar", "foo"]];
    let nested = vec![vec![], vec![""], vec!["", "1", "2"]];
    (flat, nested)
}

/// `store-path`.
pub(super) fn store_paths() -> Vec<StorePath> {
    vec![path("foo"), path("foo-bar")]
}

/// `optional-store-path`: `std::nullopt`, then `…-foo-bar`.
pub(super) fn optional_store_paths() -> Vec<Option<StorePath>> {
    vec![None, Some(path("foo-bar"))]
}

/// `content-address`: Text/SHA-256 of "Derive(...)", Flat/SHA-1 of
/// "blob blob...", NixArchive/SHA-256 of "(...)", in Nix's
/// `ContentAddress::render` form (`text:`, `fixed:`, `fixed:r:`).
pub(super) fn content_addresses() -> Vec<String> {
    let sha256 = |s: &str| nix32_encode(&sha2::Sha256::digest(s.as_bytes()));
    vec![
        format!("text:sha256:{}", sha256("Derive(...)")),
        blob_ca(),
        format!("fixed:r:sha256:{}", sha256("(...)")),
    ]
}

fn blob_ca() -> String {
    let b64 = BLOB_SHA1_SRI.strip_prefix("sha1-").expect("SRI prefix");
    let digest = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("valid base64");
    format!("fixed:sha1:{}", nix32_encode(&digest))
}

/// `optional-content-address`: `std::nullopt` (the empty string), then the
/// Flat/SHA-1 one.
pub(super) fn optional_content_addresses() -> Vec<Option<String>> {
    vec![None, Some(blob_ca())]
}

/// `drv-output` (no longer defined by worker-protocol.cc at 88b09c64; its
/// `.json` and the earlier test define it): two `DrvOutput{drvHash, outputName}`.
pub(super) fn drv_outputs() -> Vec<(&'static str, &'static str)> {
    vec![(NAR_HASH_SRI, "baz"), (DRV_HASH_2_SRI, "quux")]
}

/// `DrvOutput{Hash::parseSRI(sri), name}` through the daemon's id type.
pub(super) fn drv_output_id(sri: &str, name: &str) -> DrvOutputId {
    DrvOutputId::parse(&format!("{sri}!{name}")).expect("Nix's test ids are valid")
}

/// One derived path as Nix's tests build it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Derived {
    /// `DerivedPath::Opaque{path}`.
    Opaque(StorePath),
    /// `DerivedPath::Built{drvPath, outputs}`; no outputs = `OutputsSpec::All`.
    Built(StorePath, Vec<String>),
}

/// `derived-path-1.29`.
pub(super) fn derived_paths_1_29() -> Vec<Derived> {
    vec![
        Derived::Opaque(path("foo")),
        Derived::Built(path("bar.drv"), vec![]),
        Derived::Built(path("bar.drv"), vec!["x".into(), "y".into()]),
    ]
}

/// `derived-path-1.30`.
pub(super) fn derived_paths_1_30() -> Vec<Derived> {
    vec![
        Derived::Opaque(path("foo")),
        Derived::Opaque(path("foo.drv")),
        Derived::Built(path("bar.drv"), vec![]),
        Derived::Built(path("bar.drv"), vec!["x".into(), "y".into()]),
    ]
}

/// `build-mode`: bmNormal, bmRepair, bmCheck.
pub(super) const BUILD_MODES: [u64; 3] = [0, 1, 2];

/// `optional-trusted-flag`: std::nullopt, Trusted, NotTrusted.
pub(super) const TRUSTED_FLAGS: [Option<bool>; 3] = [None, Some(true), Some(false)];

/// One path info as Nix's tests build it (`ValidPathInfo` when `path` is set).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Info {
    pub path: Option<StorePath>,
    pub deriver: Option<StorePath>,
    pub nar_hash: NarHash,
    pub references: Vec<StorePath>,
    pub registration_time: u64,
    pub nar_size: u64,
    pub ultimate: bool,
    pub sigs: Vec<String>,
    pub ca: Option<String>,
}

/// `UnkeyedValidPathInfo{"/nix/store", narHash}` with the times every test sets.
fn base_info(path: Option<StorePath>) -> Info {
    Info {
        path,
        deriver: None,
        nar_hash: nar_hash(),
        references: vec![],
        registration_time: 23423,
        nar_size: 34878,
        ultimate: false,
        sigs: vec![],
        ca: None,
    }
}

/// `unkeyed-valid-path-info-1.15`.
pub(super) fn unkeyed_infos_1_15() -> Vec<Info> {
    let second = Info {
        deriver: Some(path("bar.drv")),
        references: vec![other_path("foo.drv")],
        ..base_info(None)
    };
    vec![base_info(None), second]
}

/// The second info of `valid-path-info-1.15` and `-1.16`: a deriver, an
/// other reference and a self reference (a `StorePathSet`: sorted).
fn info_with_refs() -> Info {
    Info {
        deriver: Some(path("bar.drv")),
        references: vec![path("bar"), other_path("foo")],
        ..base_info(Some(path("bar")))
    }
}

/// `valid-path-info-1.15`.
pub(super) fn infos_1_15() -> Vec<Info> {
    vec![base_info(Some(path("bar"))), info_with_refs()]
}

/// `valid-path-info-1.16`. The third is `ValidPathInfo::makeFromCA(store,
/// "foo", FixedOutputInfo{NixArchive, sha256("(...)"), refs {bar, self}})`;
/// its path is computed by Nix's store and written here from the `.json`.
pub(super) fn infos_1_16() -> Vec<Info> {
    let foo = StorePath::from_base_name("n5wkd9frr45pa74if5gpz9j7mifg27fh-foo").expect("valid");
    let from_ca = Info {
        references: vec![path("bar"), foo.clone()],
        ca: Some(content_addresses()[2].clone()),
        ..base_info(Some(foo))
    };
    vec![
        Info {
            ultimate: true,
            ..base_info(Some(path("bar")))
        },
        Info {
            sigs: vec![zero_sig("fake-sig-1"), zero_sig("fake-sig-2")],
            ..info_with_refs()
        },
        from_ca,
    ]
}

/// One realisation (`Realisation{{outPath, signatures}, {drvHash, outputName}}`
/// plus the dependent realisations of `realisation-with-deps`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Real {
    pub id: DrvOutputId,
    pub out_path: StorePath,
    pub signatures: Vec<String>,
    pub dependent: Vec<(DrvOutputId, StorePath)>,
}

/// `realisation-with-deps` (values from its `.json`: signatures as
/// `key:base64` strings, one dependent realisation).
pub(super) fn realisation_with_deps_value() -> Real {
    Real {
        id: drv_output_id(NAR_HASH_SRI, "baz"),
        out_path: path("foo"),
        signatures: vec![zero_sig("asdf"), zero_sig("qwer")],
        dependent: vec![(drv_output_id(DRV_HASH_2_SRI, "quux"), path("foo"))],
    }
}

/// The first value of `realisation`: no signatures, no dependents. (Its
/// second value carries signatures as JSON objects, Nix 2.35's layout.)
pub(super) fn realisation_plain() -> Real {
    Real {
        id: drv_output_id(NAR_HASH_SRI, "baz"),
        out_path: path("foo"),
        signatures: vec![],
        dependent: vec![],
    }
}

/// `client-handshake-info_1_30` (one default value: nothing on the wire),
/// `_1_33` (daemon versions "foo", "bar") and `_1_35` (with NotTrusted,
/// Trusted), as (daemon version, trusted).
pub(super) fn client_handshake_infos(minor: u8) -> Vec<(Option<&'static str>, Option<bool>)> {
    match minor {
        30 => vec![(None, None)],
        33 => vec![(Some("foo"), None), (Some("bar"), None)],
        35 => vec![(Some("foo"), Some(false)), (Some("bar"), Some(true))],
        _ => unreachable!("no golden file for client handshake info 1.{minor}"),
    }
}

/// `handshake-to-client`: what a 1.10 daemon sends a 1.10 client
/// (`defaultVersion` on both sides): its magic, then its version word.
pub(super) const HANDSHAKE_TO_CLIENT_VERSION: u8 = 10;

/// The test's `defaultVersion`, for serialisers that ignore the version.
pub(super) const DEFAULT_VERSION: u8 = 10;
