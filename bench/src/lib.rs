//! Support code of `snix-lower-store-bench` and of the criterion benches:
//! generated lower stores ([`gen`]), process accounting ([`procfs`]) and
//! latency statistics ([`stats`]).

pub mod gen;
pub mod procfs;
pub mod stats;
