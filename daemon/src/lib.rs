//! snix-lower-store: a read-only nix-daemon that serves a shared store as the
//! lower layer of Nix's `local-overlay` store.
//!
//! The store vocabulary, the protocol, the index and the test kit are
//! crates of their own (`snix-lower-store-types`, `-protocol`, `-index`,
//! `-testkit`); this crate is the daemon built on them:
//! - [`server`]: the connection loop and, in `server::ops`, what each op
//!   answers; `server::grpc` is our PathInfoService front-end;
//! - [`backend`]: where path infos come from: the index (default) or [`grpc`];
//! - [`grpc`]: snix's PathInfoService as a backend, and the conversions;
//! - [`overlay_url`]: the `local-overlay://` URL Nix needs for our socket;
//! - [`reconcile`]: the upper database after the lower was replaced;
//! - [`systemd`]: socket activation, sd_notify, journald detection;
//! - [`panics`]: the panic hook (one log line with op and peer pid) and the panic count;
//! - [`progress`]: progress of the long commands (bar, plain lines, `STATUS=`);
//! - [`verify`]: the index checked against the lower dir;
//! - `blocking`: scans and NSS look-ups off the async threads (public only
//!   with the `bench-hooks` feature, which the bench enables to measure it).

pub mod backend;
#[cfg(feature = "bench-hooks")]
pub mod blocking;
#[cfg(not(feature = "bench-hooks"))]
pub(crate) mod blocking;
pub mod grpc;
pub mod overlay_url;
pub mod panics;
pub mod progress;
pub mod reconcile;
pub mod server;
pub mod systemd;
pub mod verify;

/// What the handshake reports as the daemon's version (1.33+ clients show it
/// in `nix store info`).
pub fn daemon_version() -> String {
    format!("snix-lower-store {}", env!("CARGO_PKG_VERSION"))
}
