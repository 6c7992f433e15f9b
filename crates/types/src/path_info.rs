//! The one path-info model: everything Nix knows about a valid store path,
//! typed. Importers, the index, the content-address proof, the gRPC
//! conversion, the backends and the handlers all use [`PathInfo`]; the
//! worker protocol's `UnkeyedValidPathInfo` converts from it in one place
//! (`protocol::path_info`).
//!
//! Invariants: a [`Signature`] renders back byte for byte as the
//! `name:base64` text it was parsed from (only canonical, padded base64 is
//! accepted); signatures sort as their text does (Nix keeps them in a set of
//! strings); a `ca` is a parsed [`ContentAddress`], rendered only at the
//! edges (index row, wire, JSON). Space-joined lists (the index's and Nix's
//! `refs`/`sigs` columns) are split by [`split_list`] alone.

use base64::Engine as _;
use std::fmt;

use super::content_address::ContentAddress;
use super::path::shown;
use super::{NarHash, StorePath};

/// Everything Nix knows about a valid path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathInfo {
    pub path: StorePath,
    pub nar_hash: NarHash,
    pub nar_size: u64,
    /// Sorted by base name once indexed, as Nix's `StorePathSet`.
    pub references: Vec<StorePath>,
    pub deriver: Option<StorePath>,
    /// Seconds since the epoch; 0 before import means "not given", and the
    /// import stamps its own time (as Nix's `registerValidPath` does).
    pub registration_time: u64,
    pub ultimate: bool,
    /// Sorted once indexed, as Nix's set of signatures.
    pub sigs: Vec<Signature>,
    pub ca: Option<ContentAddress>,
}

/// A signature `<key name>:<base64 of the signature bytes>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Signature {
    pub name: String,
    pub bytes: Vec<u8>,
}

impl PathInfo {
    /// A path info with what every source has (path, NAR hash and size) and
    /// the defaults for the rest: no references, deriver, signatures or
    /// `ca`, registration time 0 (stamped at import), not ultimate. Sources
    /// and fixtures write `PathInfo { references, ..PathInfo::new(p, h, n) }`,
    /// so a new field touches the model and the conversions that carry it,
    /// not every place a path info is made.
    pub fn new(path: StorePath, nar_hash: NarHash, nar_size: u64) -> Self {
        PathInfo {
            path,
            nar_hash,
            nar_size,
            references: Vec::new(),
            deriver: None,
            registration_time: 0,
            ultimate: false,
            sigs: Vec::new(),
            ca: None,
        }
    }
}

impl Signature {
    /// Parses `name:base64`; the error quotes the input (escaped, bounded)
    /// and says what is wrong.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (name, b64) = s
            .split_once(':')
            .filter(|(n, _)| !n.is_empty())
            .ok_or_else(|| format!("signature '{}' is not name:base64", shown(s)))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| format!("signature '{}' is not base64", shown(s)))?;
        let sig = Signature {
            name: name.to_owned(),
            bytes,
        };
        // Only the canonical form: what is rendered is what was read.
        if sig.to_string() != s {
            return Err(format!("signature '{}' is not canonical (padded) base64", shown(s)));
        }
        Ok(sig)
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.bytes);
        write!(f, "{}:{b64}", self.name)
    }
}

impl Ord for Signature {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.to_string().cmp(&other.to_string())
    }
}

impl PartialOrd for Signature {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The items of a space-joined list (`refs`, `sigs` columns), empty items
/// skipped.
pub fn split_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(' ').filter(|x| !x.is_empty())
}

/// Signatures parsed from a space-joined list; the first bad one is the error.
pub fn parse_sigs(s: &str) -> Result<Vec<Signature>, String> {
    split_list(s).map(Signature::parse).collect()
}

/// Signatures rendered, sorted and deduplicated, space-joined (how the
/// index and Nix's database store them).
pub fn join_sigs(sigs: &[Signature]) -> String {
    let mut v: Vec<String> = sigs.iter().map(Signature::to_string).collect();
    v.sort();
    v.dedup();
    v.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_render_as_read_and_refuse_what_would_not() {
        let s = "cache.example-1:AQID";
        let sig = Signature::parse(s).unwrap();
        assert_eq!(
            (sig.name.as_str(), sig.bytes.as_slice()),
            ("cache.example-1", &[1u8, 2, 3][..])
        );
        assert_eq!(sig.to_string(), s);
        for (bad, why) in [
            ("nocolon", "not name:base64"),
            (":AQID", "not name:base64"),
            ("k:%%%", "not base64"),
            ("k:AQI", "not base64"),
        ] {
            let e = Signature::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn signatures_sort_as_their_text() {
        let a = Signature::parse("a:AQID").unwrap();
        let ab = Signature::parse("a-b:AQID").unwrap();
        let mut v = vec![a.clone(), ab.clone()];
        v.sort();
        assert_eq!(v, vec![ab, a], "'-' sorts before ':' as in Nix's string set");
        assert_eq!(
            join_sigs(&[v[1].clone(), v[0].clone(), v[1].clone()]),
            "a-b:AQID a:AQID"
        );
        assert_eq!(parse_sigs(" a-b:AQID  a:AQID ").unwrap(), v);
    }
}
