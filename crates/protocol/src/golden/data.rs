//! Finding Nix's golden files, and the table of which of them this crate
//! tests.
//!
//! One setting: `SNIX_NIX_GOLDEN` names the data directory (the one holding
//! `worker-protocol/` and `common-protocol/`: `../shared/nix-golden`, or a
//! Nix checkout's `src/libstore-tests/data`). Unset, it is
//! `../shared/nix-golden` relative to the repository root; a relative value
//! is also taken relative to the repository root, so the answer does not
//! depend on the directory cargo runs the tests in.
//!
//! Invariants: a missing directory fails the test with a message saying
//! what to set, unless skipping was asked for explicitly
//! (`SNIX_ALLOW_SKIP=1`, and never under `CI=true`): only then does the test
//! print `SKIPPED` and pass. A directory that exists but lacks a file the
//! table names always fails: the data set is incomplete, not absent.

use std::path::{Path, PathBuf};

/// The one setting naming the golden data directory.
pub(super) const GOLDEN_ENV: &str = "SNIX_NIX_GOLDEN";
/// Its default, relative to the repository root.
const DEFAULT_DIR: &str = "../shared/nix-golden";

/// How a golden file is covered.
#[derive(Clone, Copy, Debug)]
pub(super) enum Coverage {
    /// Decoded and encoded by the test of this name (in `golden::tests`).
    Tested(&'static str),
    /// Part of the file is tested (the test named), the rest is not spoken.
    Partly(&'static str, &'static str),
    /// Not a type the daemon speaks; why.
    NotSpoken(&'static str),
}

const BUILD_RESULT: &str = "BuildResult: only in replies to BuildDerivation and BuildPathsWithResults, \
                            which the daemon refuses (server/ops.rs `refusal`)";
const PATH_NOT_HASH: &str = "protocol feature `realisation-with-path-not-hash`, never negotiated \
                             (protocol::handshake::FEATURES is empty)";

/// Every file of `worker-protocol/` (and `common-protocol/`, whose ten files
/// are byte-identical to their `worker-protocol/` namesakes and are tested
/// by the same tests), and how it is covered. The test file's header
/// repeats this table.
pub(super) const TABLE: &[(&str, Coverage)] = &[
    ("string.bin", Coverage::Tested("string")),
    ("store-path.bin", Coverage::Tested("store_path")),
    ("optional-store-path.bin", Coverage::Tested("optional_store_path")),
    ("content-address.bin", Coverage::Tested("content_address")),
    (
        "optional-content-address.bin",
        Coverage::Tested("optional_content_address"),
    ),
    ("vector.bin", Coverage::Tested("vector")),
    ("set.bin", Coverage::Tested("set")),
    ("drv-output.bin", Coverage::Tested("drv_output")),
    (
        "realisation.bin",
        Coverage::Partly(
            "realisation_without_signatures",
            "its second value has signatures as JSON objects, Nix 2.35's layout; \
             the daemon speaks Nix 2.26-2.34's (`key:sig` strings)",
        ),
    ),
    ("realisation-with-deps.bin", Coverage::Tested("realisation_with_deps")),
    ("derived-path-1.29.bin", Coverage::Tested("derived_path_1_29")),
    ("derived-path-1.30.bin", Coverage::Tested("derived_path_1_30")),
    ("build-mode.bin", Coverage::Tested("build_mode")),
    ("optional-trusted-flag.bin", Coverage::Tested("optional_trusted_flag")),
    ("handshake-to-client.bin", Coverage::Tested("handshake_to_client")),
    (
        "client-handshake-info_1_30.bin",
        Coverage::Tested("client_handshake_info"),
    ),
    (
        "client-handshake-info_1_33.bin",
        Coverage::Tested("client_handshake_info"),
    ),
    (
        "client-handshake-info_1_35.bin",
        Coverage::Tested("client_handshake_info"),
    ),
    (
        "unkeyed-valid-path-info-1.15.bin",
        Coverage::Tested("unkeyed_valid_path_info_1_15"),
    ),
    ("valid-path-info-1.15.bin", Coverage::Tested("valid_path_info_1_15")),
    ("valid-path-info-1.16.bin", Coverage::Tested("valid_path_info_1_16")),
    ("build-result-1.27.bin", Coverage::NotSpoken(BUILD_RESULT)),
    ("build-result-1.28.bin", Coverage::NotSpoken(BUILD_RESULT)),
    ("build-result-1.29.bin", Coverage::NotSpoken(BUILD_RESULT)),
    ("build-result-1.29-compat.bin", Coverage::NotSpoken(BUILD_RESULT)),
    ("build-result-1.37.bin", Coverage::NotSpoken(BUILD_RESULT)),
    (
        "build-result-realisation-with-path-not-hash.bin",
        Coverage::NotSpoken(BUILD_RESULT),
    ),
    ("keyed-build-result-1.29.bin", Coverage::NotSpoken(BUILD_RESULT)),
    (
        "drv-output-realisation-with-path-not-hash.bin",
        Coverage::NotSpoken(PATH_NOT_HASH),
    ),
    (
        "realisation-realisation-with-path-not-hash.bin",
        Coverage::NotSpoken(PATH_NOT_HASH),
    ),
    (
        "unkeyed-realisation-realisation-with-path-not-hash.bin",
        Coverage::NotSpoken(PATH_NOT_HASH),
    ),
];

fn repo_root() -> PathBuf {
    // This crate is crates/protocol in the repository.
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).to_path_buf()
}

/// The configured directory, whether or not it exists.
fn configured_dir() -> PathBuf {
    match std::env::var_os(GOLDEN_ENV) {
        Some(d) if !d.is_empty() => repo_root().join(d),
        _ => repo_root().join(DEFAULT_DIR),
    }
}

/// The setting that lets a test skip for a missing environment.
pub(super) const ALLOW_SKIP_ENV: &str = "SNIX_ALLOW_SKIP";

/// Whether a test may skip: `SNIX_ALLOW_SKIP=1` and not `CI=true`.
fn skip_allowed() -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    !ci && std::env::var(ALLOW_SKIP_ENV).is_ok_and(|v| v == "1")
}

/// The data directory; `None` (after a visible `SKIPPED` line) when it is
/// missing and skipping is allowed ([`skip_allowed`]). Panics otherwise.
pub(super) fn golden_dir(test: &str) -> Option<PathBuf> {
    let dir = configured_dir();
    if dir.join("worker-protocol").is_dir() {
        return Some(dir);
    }
    let msg = format!(
        "Nix's golden files are not at {} (no worker-protocol/ there): set {GOLDEN_ENV} to the directory \
         holding worker-protocol/ and common-protocol/ (../shared/nix-golden next to the repository, \
         or a Nix checkout's src/libstore-tests/data)",
        dir.display()
    );
    if !skip_allowed() {
        panic!("golden test {test}: {msg}; a failure, not a skip (set {ALLOW_SKIP_ENV}=1 to skip it outside CI)");
    }
    // Written to the process's stderr, not through `eprintln!`, which the
    // test harness captures: the skip must show in a normal `cargo test`.
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIPPED golden test {test}: {msg}");
    None
}

/// The bytes of `<dir>/<sub>/<file>`, or `None` when `sub/` is absent
/// (`common-protocol/` is optional). A missing file in a present directory
/// is a failure.
pub(super) fn read(dir: &Path, sub: &str, file: &str) -> Option<Vec<u8>> {
    let d = dir.join(sub);
    if !d.is_dir() {
        return None;
    }
    let p = d.join(file);
    match std::fs::read(&p) {
        Ok(b) => Some(b),
        Err(e) if sub == "common-protocol" && e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!(
            "golden file {} cannot be read ({e}); the data directory is incomplete",
            p.display()
        ),
    }
}

/// The `.bin` files of `worker-protocol/` and `common-protocol/`, as
/// (subdirectory, file name), sorted.
pub(super) fn all_bins(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for sub in ["worker-protocol", "common-protocol"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for e in entries {
            let name = e
                .expect("readable directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned();
            if name.ends_with(".bin") {
                out.push((sub.to_owned(), name));
            }
        }
    }
    out.sort();
    out
}
