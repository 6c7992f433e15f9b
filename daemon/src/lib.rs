//! snix-lower-store: a read-only nix-daemon that serves a shared store as the
//! lower layer of Nix's `local-overlay` store.
//!
//! Layout, from the wire inwards:
//! - [`protocol`]: the worker protocol (framing, handshake, request decoding);
//! - [`server`]: the connection loop and, in `server::ops`, what each op answers;
//! - [`backend`]: where path infos come from: [`index`] (embedded, default) or [`grpc`];
//! - [`index`]: the embedded path-info database and its importers;
//! - [`grpc`]: snix's PathInfoService: our client backend and our server;
//! - [`lower`]: the physical lower directory, read-only;
//! - [`store`]: store paths, hashes, NAR and `.drv` formats;
//! - [`client`]: a minimal protocol client for tests, the demo and benches;
//! - [`overlay_url`]: the `local-overlay://` URL Nix needs for our socket;
//! - [`reconcile`]: the upper database after the lower was replaced;
//! - [`systemd`]: socket activation, sd_notify, journald detection;
//! - [`panics`]: the panic hook (one log line with op and peer pid) and the panic count;
//! - [`progress`]: progress of the long commands (bar, plain lines, `STATUS=`).

pub mod backend;
/// Public only so that `bench/benches/blocking.rs` measures the real thing.
#[doc(hidden)]
pub mod blocking;
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
