//! Store path fingerprints as Nix computes them (its store path
//! specification): `<type>:sha256:<base16 inner hash>:<store dir>:<name>`,
//! SHA-256, XOR-folded to 20 bytes, nix-base32. The one implementation in the
//! crate: content-address proofs and checks (`ca_proof`,
//! `content_address`) and the demo's generated paths all use it.
//!
//! Invariant: pure hashing of the given strings; references are listed in
//! store path order, each once, a self-reference as `:self` where allowed.

use sha2::{Digest, Sha256};

use super::hash::{hex_encode, nix32_encode};
use super::{StoreDir, StorePath};

/// `<kind>:<ref>:<ref>…[:self]`, references as full paths in store path
/// order, each once. `None` when `path` refers to itself and `self_allowed`
/// is false.
pub(crate) fn type_with_refs(
    kind: &str,
    sd: &StoreDir,
    path: &StorePath,
    refs: &[StorePath],
    self_allowed: bool,
) -> Option<String> {
    let mut sorted: Vec<&StorePath> = refs.iter().collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut ty = String::with_capacity(kind.len() + sorted.len() * (sd.as_str().len() + 64));
    ty.push_str(kind);
    let mut has_self = false;
    for r in sorted {
        if r == path {
            has_self = true;
            continue;
        }
        ty.push(':');
        ty.push_str(sd.as_str());
        ty.push('/');
        ty.push_str(r.base_name());
    }
    if has_self {
        if !self_allowed {
            return None;
        }
        ty.push_str(":self");
    }
    Some(ty)
}

/// The hash part Nix computes for `<ty>:sha256:<base16 inner>:<store dir>:<name>`.
pub(crate) fn hash_part(sd: &StoreDir, ty: &str, inner: &[u8; 32], name: &str) -> String {
    let mut h = Sha256::new();
    for part in [ty.as_bytes(), b":sha256:", hex_encode(inner).as_bytes(), b":"] {
        h.update(part);
    }
    h.update(sd.as_str());
    h.update(b":");
    h.update(name);
    let full: [u8; 32] = h.finalize().into();
    let mut folded = [0u8; 20];
    for (i, b) in full.iter().enumerate() {
        folded[i % 20] ^= b;
    }
    nix32_encode(&folded)
}

/// Nix's `makeStorePath`: the path of `name` whose fingerprint is `ty` and
/// the SHA-256 `inner`.
pub fn make_store_path(sd: &StoreDir, ty: &str, inner: &[u8; 32], name: &str) -> StorePath {
    StorePath::from_owned_base_name(format!("{}-{name}", hash_part(sd, ty, inner, name)))
        .expect("a computed hash part and a valid name make a valid store path")
}
