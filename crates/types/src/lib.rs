//! Nix store vocabulary shared by every other module: store paths, hashes,
//! the one path-info model ([`path_info::PathInfo`] with its typed
//! [`content_address::ContentAddress`] and [`path_info::Signature`]),
//! derived paths, store path fingerprints, the NAR serialization of a
//! lower-dir object (and the 8-byte padding the wire shares), the `.drv`
//! format and the content addresses a store path proves (`ca_proof`).
//!
//! The ground floor: nothing here uses a module outside `store`
//! (`scripts/module-graph` checks it), and nothing does I/O on sockets; the
//! protocol, the index, the backends and the server build on it.

pub mod ca_proof;
pub mod content_address;
pub mod derived_path;
pub mod drv;
pub mod fingerprint;
pub mod hash;
pub mod lower;
pub mod nar;
pub mod path;
pub mod path_info;
pub mod path_info_json;
pub mod progress;
pub mod realisation;

pub use hash::NarHash;
pub use path::{StoreDir, StorePath};
