//! Content addresses as Nix writes them (`text:sha256:…`, `fixed:<algo>:…`,
//! `fixed:r:<algo>:…`, `fixed:git:<algo>:…`), parsed and checked against the
//! store path they claim to describe.
//!
//! Invariant: [`ContentAddress::check`] accepts a `ca` only when recomputing the
//! store path from it (its method, algorithm and digest, the path's name,
//! its references and the store directory) gives exactly the path, as Nix's
//! `ValidPathInfo::isContentAddressed` does before `LocalStore` registers a
//! path ("claims to be content-addressed but isn't"). Pure hashing: no file
//! is read. The rules, from Nix's store path specification:
//! - `text`: sha256 only; type `text` plus the references, never itself;
//! - `fixed:r:sha256`: type `source` plus the references, `:self` last when
//!   the path refers to itself;
//! - every other fixed method and algorithm (flat, `r:` with another
//!   algorithm, `git:` with sha1 or sha256): no references at all, and the
//!   path is the `output:out` path of
//!   `sha256("fixed:out:<r:|git:|><algo>:<base16 digest>:")`.
//!
//! Digests are read in any encoding Nix parses (base16, nix-base32, base64,
//! told apart by length); [`ContentAddress::render`] gives Nix's own form
//! (nix-base32), which is what Nix stores.

use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::fingerprint::{hash_part, type_with_refs};
use super::hash::{digest_len, hex_encode, nix32_decode_vec, nix32_encode, nix32_len};
use super::path::shown;
use super::{StoreDir, StorePath};

/// How the content was hashed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `text:` (a flat file with references, never itself).
    Text,
    /// `fixed:` (the file's bytes).
    Flat,
    /// `fixed:r:` (the NAR serialisation).
    Nar,
    /// `fixed:git:` (a Git blob or tree hash).
    Git,
}

/// A parsed content address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentAddress {
    pub method: Method,
    /// `md5`, `sha1`, `sha256` or `sha512`.
    pub algo: &'static str,
    pub digest: Vec<u8>,
}

impl ContentAddress {
    /// Parses `<text|fixed>:[r:|git:]<algo>:<digest>`; the error says what
    /// is wrong (the caller names the path).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (prefix, rest) = s
            .split_once(':')
            .ok_or("not a content address: expected '<text|fixed>:<algo>:<hash>'")?;
        let (method, rest) = match prefix {
            "text" => (Method::Text, rest),
            "fixed" => match rest.split_once(':') {
                Some(("r", r)) => (Method::Nar, r),
                Some(("git", r)) => (Method::Git, r),
                _ => (Method::Flat, rest),
            },
            p => return Err(format!("unknown content address prefix '{}' (text or fixed)", shown(p))),
        };
        let (algo_s, digest_s) = rest
            .split_once(':')
            .ok_or("content address hash is not in the form '<algo>:<hash>'")?;
        let algo = ["md5", "sha1", "sha256", "sha512"]
            .into_iter()
            .find(|a| *a == algo_s)
            .ok_or_else(|| format!("unknown hash algorithm '{}'", shown(algo_s)))?;
        if method == Method::Text && algo != "sha256" {
            return Err(format!("a text content address is sha256, not {algo}"));
        }
        if method == Method::Git && !matches!(algo, "sha1" | "sha256") {
            return Err(format!("a git content address is sha1 or sha256, not {algo}"));
        }
        let digest = decode_digest(algo, digest_s)?;
        Ok(ContentAddress { method, algo, digest })
    }

    /// Nix's rendering: `text:` / `fixed:` / `fixed:r:` / `fixed:git:`, the
    /// algorithm, the digest in nix-base32.
    pub fn render(&self) -> String {
        let prefix = match self.method {
            Method::Text => "text:",
            Method::Flat => "fixed:",
            Method::Nar => "fixed:r:",
            Method::Git => "fixed:git:",
        };
        format!("{prefix}{}:{}", self.algo, nix32_encode(&self.digest))
    }

    /// The hash part of the store path named `name` with these references
    /// (a reference equal to `path` is a self-reference) that this content
    /// address makes, or why no such path exists.
    fn hash_part_for(&self, sd: &StoreDir, path: &StorePath, refs: &[StorePath]) -> Result<String, String> {
        let name = path.name();
        match (self.method, self.algo) {
            (Method::Text, _) => {
                let ty = type_with_refs("text", sd, path, refs, false)
                    .ok_or("a text content address cannot describe a path that refers to itself")?;
                Ok(hash_part(sd, &ty, &self.sha256()?, name))
            }
            (Method::Nar, "sha256") => {
                let ty = type_with_refs("source", sd, path, refs, true).unwrap_or_default();
                Ok(hash_part(sd, &ty, &self.sha256()?, name))
            }
            _ if !refs.is_empty() => Err(format!(
                "a {} content address allows no references, and it has {}",
                self.kind(),
                refs.len()
            )),
            _ => {
                let method = match self.method {
                    Method::Nar => "r:",
                    Method::Git => "git:",
                    _ => "",
                };
                let payload = format!("fixed:out:{method}{}:{}:", self.algo, hex_encode(&self.digest));
                Ok(hash_part(sd, "output:out", &Sha256::digest(payload).into(), name))
            }
        }
    }

    /// The digest as a SHA-256 (text and `fixed:r:sha256` always are).
    fn sha256(&self) -> Result<[u8; 32], String> {
        self.digest
            .as_slice()
            .try_into()
            .map_err(|_| format!("{} digest is not 32 bytes", self.algo))
    }

    /// `<method> <algo>`, as errors name it.
    fn kind(&self) -> String {
        let m = match self.method {
            Method::Text => "text",
            Method::Flat => "flat",
            Method::Nar => "nar",
            Method::Git => "git",
        };
        format!("{m} {}", self.algo)
    }
}

/// The digest of `algo` in base16, nix-base32 or base64, by its length.
fn decode_digest(algo: &str, s: &str) -> Result<Vec<u8>, String> {
    let n = digest_len(algo).ok_or("unknown hash algorithm")?;
    let bad = |enc: &str| format!("{algo} hash '{}' is not valid {enc}", shown(s));
    if s.len() == 2 * n {
        return decode_base16(s).ok_or_else(|| bad("base16"));
    }
    if s.len() == nix32_len(n) {
        return nix32_decode_vec(s, n).ok_or_else(|| bad("nix-base32"));
    }
    if s.len() == n.div_ceil(3) * 4 {
        return base64::engine::general_purpose::STANDARD
            .decode(s)
            .ok()
            .filter(|v| v.len() == n)
            .ok_or_else(|| bad("base64"));
    }
    Err(format!(
        "{algo} hash '{}' has {} characters: not base16 ({}), nix-base32 ({}) or base64 ({})",
        shown(s),
        s.len(),
        2 * n,
        nix32_len(n),
        n.div_ceil(3) * 4
    ))
}

fn decode_base16(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    (0..b.len() / 2)
        .map(|i| {
            let hi = (b[2 * i] as char).to_digit(16)?;
            let lo = (b[2 * i + 1] as char).to_digit(16)?;
            Some((hi * 16 + lo) as u8)
        })
        .collect()
}

impl ContentAddress {
    /// [`ContentAddress::parse`] with the error an importer shows: the
    /// input quoted (escaped, bounded) and why it is invalid.
    pub fn parse_quoted(s: &str) -> Result<Self, String> {
        Self::parse(s).map_err(|why| format!("content address '{}' is invalid: {why}", shown(s)))
    }

    /// Checks this `ca` of `path` (with these references) as Nix does
    /// before registering a path: `Ok` when the content address makes
    /// exactly `path`; otherwise why not, quoting the `ca` (the caller names
    /// the path).
    pub fn check(&self, sd: &StoreDir, path: &StorePath, refs: &[StorePath]) -> Result<(), String> {
        let quoted = self.render();
        let hp = self
            .hash_part_for(sd, path, refs)
            .map_err(|why| format!("claims to be content-addressed by '{quoted}' but is not: {why}"))?;
        if hp != path.hash_part() {
            return Err(format!(
                "claims to be content-addressed by '{quoted}' but is not: with its {} reference(s) that content address makes {}/{hp}-{}",
                refs.len(),
                sd.as_str(),
                path.name()
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for ContentAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path_info_json::parse as parse_path_info_json_doc;

    /// Parse and check, as an import does with a supplied `ca` string.
    fn check_claimed(sd: &StoreDir, path: &StorePath, refs: &[StorePath], ca: &str) -> Result<String, String> {
        let parsed = ContentAddress::parse_quoted(ca)?;
        parsed.check(sd, path, refs)?;
        Ok(parsed.render())
    }

    /// `nix path-info --json --all` of a store made by real Nix 2.26.3 with
    /// `make-ca-check-vectors.sh` beside it: every method, several
    /// algorithms, and a content-addressed derivation output referring to
    /// another path and to itself.
    const VECTORS: &str = include_str!("../tests/data/ca-check-vectors.json");

    fn vectors() -> (StoreDir, Vec<crate::path_info::PathInfo>) {
        let sd = StoreDir::new("/nix/store").unwrap();
        let v = parse_path_info_json_doc(VECTORS, &sd).unwrap();
        (sd, v)
    }

    fn ca_of(v: &crate::path_info::PathInfo) -> String {
        v.ca.as_ref().unwrap().render()
    }

    #[test]
    fn every_ca_real_nix_recorded_checks_and_renders_as_nix_does() {
        let (sd, vs) = vectors();
        let mut kinds = std::collections::BTreeSet::new();
        for v in &vs {
            let ca = &ca_of(v);
            assert_eq!(
                check_claimed(&sd, &v.path, &v.references, ca).as_deref(),
                Ok(ca.as_str()),
                "{}",
                v.path
            );
            let p = ContentAddress::parse(ca).unwrap();
            kinds.insert(format!("{} self={}", p.kind(), v.references.contains(&v.path)));
        }
        let want = [
            "flat md5 self=false",
            "flat sha1 self=false",
            "flat sha256 self=false",
            "git sha1 self=false",
            "nar sha1 self=false",
            "nar sha256 self=false",
            "nar sha256 self=true",
            "nar sha512 self=false",
            "text sha256 self=false",
        ];
        assert_eq!(kinds.into_iter().collect::<Vec<_>>(), want);
    }

    #[test]
    fn base16_and_base64_digests_check_and_render_in_nix32() {
        let (sd, vs) = vectors();
        for v in &vs {
            let p = ContentAddress::parse(&ca_of(v)).unwrap();
            let ca = ca_of(v);
            let (head, _) = ca.rsplit_once(':').unwrap();
            let b64 = base64::engine::general_purpose::STANDARD.encode(&p.digest);
            for other in [format!("{head}:{}", hex_encode(&p.digest)), format!("{head}:{b64}")] {
                assert_eq!(
                    check_claimed(&sd, &v.path, &v.references, &other),
                    Ok(p.render()),
                    "{other}"
                );
            }
        }
    }

    #[test]
    fn a_changed_digest_name_reference_or_method_is_refused() {
        let (sd, vs) = vectors();
        for v in &vs {
            let ca = &ca_of(v);
            let p = ContentAddress::parse(ca).unwrap();
            let mut d = p.clone();
            d.digest[0] ^= 1;
            let err = check_claimed(&sd, &v.path, &v.references, &d.render()).unwrap_err();
            assert!(
                err.contains("claims to be content-addressed") && err.contains(&d.render()),
                "{err}"
            );
            let renamed = StorePath::from_base_name(&format!("{}-x{}", v.path.hash_part(), v.path.name())).unwrap();
            assert!(check_claimed(&sd, &renamed, &v.references, ca).is_err(), "{ca}");
            let more = [v.references.clone(), vec![vs[0].path.clone()]].concat();
            if !v.references.contains(&vs[0].path) && vs[0].path != v.path {
                assert!(check_claimed(&sd, &v.path, &more, ca).is_err(), "{ca} + ref");
            }
            if !v.references.is_empty() {
                assert!(check_claimed(&sd, &v.path, &[], ca).is_err(), "{ca} no refs");
            }
            for m in [Method::Flat, Method::Nar, Method::Text, Method::Git] {
                let other = ContentAddress { method: m, ..p.clone() };
                if m != p.method {
                    assert!(
                        check_claimed(&sd, &v.path, &v.references, &other.render()).is_err(),
                        "{other:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn garbage_is_refused_with_the_reason() {
        let (sd, vs) = vectors();
        let v = &vs[0];
        let nix32 = nix32_encode(&[0; 32]);
        for (ca, why) in [
            ("", "not a content address"),
            ("garbage", "not a content address"),
            ("blob:sha256:x", "unknown content address prefix 'blob'"),
            ("fixed:r:sha3:abc", "unknown hash algorithm 'sha3'"),
            ("fixed:sha256", "not in the form"),
            ("fixed:sha256:abc", "has 3 characters"),
            (&format!("fixed:sha256:{}e", &nix32[1..]), "not valid nix-base32"),
            (
                &format!("text:sha1:{}", nix32_encode(&[0; 20])),
                "text content address is sha256",
            ),
            (
                &format!("fixed:git:md5:{}", nix32_encode(&[0; 16])),
                "git content address is sha1 or sha256",
            ),
        ] {
            let err = check_claimed(&sd, &v.path, &v.references, ca).unwrap_err();
            assert!(err.contains("is invalid") && err.contains(why), "{ca}: {err}");
        }
    }

    #[test]
    fn text_refers_never_to_itself_and_fixed_flat_to_nothing() {
        let (sd, vs) = vectors();
        let text = vs.iter().find(|v| ca_of(v).starts_with("text:")).unwrap();
        let with_self = [text.references.clone(), vec![text.path.clone()]].concat();
        let err = check_claimed(&sd, &text.path, &with_self, &ca_of(text)).unwrap_err();
        assert!(err.contains("cannot describe a path that refers to itself"), "{err}");
        let flat = vs.iter().find(|v| ca_of(v).starts_with("fixed:sha256:")).unwrap();
        let err = check_claimed(&sd, &flat.path, std::slice::from_ref(&flat.path), &ca_of(flat)).unwrap_err();
        assert!(
            err.contains("flat sha256 content address allows no references"),
            "{err}"
        );
    }
}
