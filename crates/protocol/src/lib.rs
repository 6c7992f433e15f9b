//! The nix-daemon worker protocol, server side, as Nix 2.26 through 2.34
//! speak it (protocol 1.21 through 1.38; 1.39 clients negotiate down).
//!
//! - [`wire`]: u64 words, padded strings, lists, framed data; bounded decoding.
//! - [`handshake`]: magic numbers, version and feature negotiation, trust;
//!   it sets the reader to the negotiated version.
//! - [`codec`]: the [`codec::Wire`] trait, generic lists, sets, pairs and
//!   optional paths ([`codec::Labelled`]), and the typed values: path infos,
//!   STDERR frames, handshake messages; one layout each, version gates
//!   inside, asking the version the reader or buffer carries.
//! - [`request`]: the op table and one request type per op, with its reply
//!   type. Write payloads are drained here, so a refused op leaves the
//!   connection ready for the next one.
//!
//! What each op *answers* lives in `server::ops`, not here.

pub mod codec;
pub mod handshake;
pub mod nar_skip;
pub mod request;
pub mod wire;

#[cfg(test)]
mod golden;
#[cfg(test)]
mod roundtrip_tests;

/// First word a client sends.
pub const WORKER_MAGIC_1: u64 = 0x6e69_7863;
/// First word the daemon answers.
pub const WORKER_MAGIC_2: u64 = 0x6478_696f;

/// A negotiated protocol version (major is always 1; this is the minor).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProtoVersion(pub u8);

impl ProtoVersion {
    /// The newest layout we implement and advertise.
    pub const LATEST: ProtoVersion = ProtoVersion(38);
    /// The oldest client we serve: 1.21 is where AddToStoreNar stopped
    /// sending an unframed NAR (Nix 2.3 speaks 1.21).
    pub const MINIMUM: ProtoVersion = ProtoVersion(21);

    pub fn to_wire(self) -> u64 {
        (1 << 8) | self.0 as u64
    }

    pub fn at_least(self, minor: u8) -> bool {
        self.0 >= minor
    }
}

impl std::fmt::Display for ProtoVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "1.{}", self.0)
    }
}
