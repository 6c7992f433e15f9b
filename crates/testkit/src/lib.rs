//! Test kit of snix-lower-store: a minimal worker-protocol client
//! ([`client`]) and a generated demo store ([`demo`]). The `demo` subcommand,
//! the tests, the benches, the e2e suite and the fuzz targets use it; nothing
//! in the daemon's serving path does.

pub mod client;
pub mod demo;
