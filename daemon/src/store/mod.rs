//! Nix store vocabulary shared by every other module: store paths, hashes,
//! the NAR serialization of a lower-dir object, the `.drv` format and the
//! content addresses a store path proves (`ca_proof`).
//!
//! Nothing here does I/O on sockets; the protocol and the index build on it.

pub mod ca_proof;
pub mod content_address;
pub mod derived_path;
pub mod drv;
pub(crate) mod fingerprint;
pub mod hash;
pub mod nar;
pub mod path;
pub mod path_info;
pub mod realisation;

pub use hash::NarHash;
pub use path::{StoreDir, StorePath};
