//! Store paths (`/nix/store/<hash>-<name>`) and the store directory they live in.
//!
//! Every path that arrives from a client, an import file, a gRPC message or
//! our own index is parsed here (`StorePath::from_base_name`, the one
//! validating constructor) before it reaches the index or the file system: a
//! name can never contain `/`, so a valid store path can never point outside
//! the lower directory.
//!
//! Invariant: a `StorePath` is ASCII, its first 32 bytes are nix-base32 and
//! byte 32 is `-`, so `hash_part` and `name` slice at char boundaries. Input
//! is checked byte-wise, so no input (multi-byte UTF-8 anywhere) can panic.
//! Rejected input is shown escaped and bounded (`shown`).

use std::fmt;

pub(crate) const HASH_PART_LEN: usize = 32;
pub(crate) const MAX_NAME_LEN: usize = 211;

/// A validated store path, kept as its base name (`<hash>-<name>`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePath(String);

/// How much of a rejected input an error message shows.
pub(crate) const SHOWN_MAX_CHARS: usize = 200;

/// Untrusted text for an error message: ASCII as Rust's `escape_debug`
/// shows it (control characters, quotes and `\\` escaped), every non-ASCII
/// character as `\u{…}` (so a look-alike such as Cyrillic `а` is visible),
/// at most `SHOWN_MAX_CHARS` characters, then `…` when cut.
pub fn shown(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let before = out.len();
        if c.is_ascii() {
            out.extend(c.escape_debug());
        } else {
            out.extend(c.escape_unicode());
        }
        if out.len() > SHOWN_MAX_CHARS {
            out.truncate(before);
            out.push('…');
            break;
        }
    }
    out
}

/// Why a string is not a store path (the input shown escaped and bounded).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StorePathError {
    #[error("'{0}' is not in the store directory '{1}'")]
    NotInStore(String, String),
    #[error("'{0}' is not a valid store path: {1}")]
    Invalid(String, &'static str),
}

impl StorePath {
    /// Parse a base name `<32 nix-base32 chars>-<name>`. Works on bytes:
    /// any UTF-8 input is refused or accepted, never panics.
    pub fn from_base_name(s: &str) -> Result<Self, StorePathError> {
        check_base_name(s)?;
        Ok(StorePath(s.to_owned()))
    }

    /// `from_base_name` for a base name the caller already owns (rows read
    /// from the index): the same checks, without a copy.
    pub fn from_owned_base_name(s: String) -> Result<Self, StorePathError> {
        check_base_name(&s)?;
        Ok(StorePath(s))
    }

    pub fn base_name(&self) -> &str {
        &self.0
    }

    pub fn hash_part(&self) -> &str {
        &self.0[..HASH_PART_LEN]
    }

    pub fn name(&self) -> &str {
        &self.0[HASH_PART_LEN + 1..]
    }

    pub fn is_derivation(&self) -> bool {
        self.0.ends_with(".drv")
    }
}

/// The checks of `StorePath::from_base_name`: `<32 nix-base32 chars>-<name>`,
/// on bytes, so any UTF-8 input is refused or accepted, never panics.
fn check_base_name(s: &str) -> Result<(), StorePathError> {
    let bad = |why| StorePathError::Invalid(shown(s), why);
    let b = s.as_bytes();
    if b.len() < HASH_PART_LEN + 2 {
        return Err(bad("too short"));
    }
    let (hash, rest) = b.split_at(HASH_PART_LEN);
    if !hash.iter().all(|&c| super::hash::is_nix32_byte(c)) {
        return Err(bad("hash part contains a character outside nix-base32"));
    }
    let name = rest
        .strip_prefix(b"-")
        .ok_or_else(|| bad("no '-' after the hash part"))?;
    check_name_bytes(name).map_err(bad)
}

/// Nix's rules for the name part of a store path.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    check_name_bytes(name.as_bytes())
}

fn check_name_bytes(name: &[u8]) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("name is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("name is longer than 211 characters");
    }
    if name == b"." || name == b".." || name.starts_with(b".-") || name.starts_with(b"..-") {
        return Err("name must not be '.' or '..' or start with such a component");
    }
    if !name
        .iter()
        .all(|&c| c.is_ascii_alphanumeric() || b"+-._?=".contains(&c))
    {
        return Err("name contains a character outside [A-Za-z0-9+-._?=]");
    }
    Ok(())
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The logical store directory paths are printed under (`/nix/store`).
/// Shared (`Arc`): replies hold it next to each path they show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreDir(std::sync::Arc<str>);

impl StoreDir {
    pub fn new(dir: &str) -> Result<Self, String> {
        let d = dir.trim_end_matches('/');
        if !d.starts_with('/') || d.is_empty() {
            return Err(format!("store directory '{dir}' must be an absolute path"));
        }
        Ok(StoreDir(d.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parse a full path `<store dir>/<base name>`.
    pub fn parse(&self, full: &str) -> Result<StorePath, StorePathError> {
        let base = full
            .strip_prefix(&*self.0)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| StorePathError::NotInStore(shown(full), self.0.to_string()))?;
        // The error names the full path the caller gave, not only its base name.
        StorePath::from_base_name(base).map_err(|e| match e {
            StorePathError::Invalid(_, why) => StorePathError::Invalid(shown(full), why),
            other => other,
        })
    }

    pub fn display(&self, p: &StorePath) -> String {
        let mut s = String::with_capacity(self.0.len() + 1 + p.0.len());
        s.push_str(&self.0);
        s.push('/');
        s.push_str(&p.0);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "/nix/store/00bgd045z0d4icpbc2yyz4gx48ak44la-net-tools-1.60_p20170221182432";

    #[test]
    fn parses_and_prints() {
        let sd = StoreDir::new("/nix/store").unwrap();
        let p = sd.parse(GOOD).unwrap();
        assert_eq!(p.hash_part(), "00bgd045z0d4icpbc2yyz4gx48ak44la");
        assert_eq!(p.name(), "net-tools-1.60_p20170221182432");
        assert_eq!(sd.display(&p), GOOD);
    }

    #[test]
    fn rejects_what_nix_rejects() {
        let sd = StoreDir::new("/nix/store").unwrap();
        for bad in [
            "/nix/store/00bgd045z0d4icpbc2yyz4gx48ak44la",
            "/nix/store/00bgd045z0d4icpbc2yyz4gx48ak44le-x",
            "/nix/store/00bgd045z0d4icpbc2yyz4gx48ak44la-a/b",
            "/nix/store/00bgd045z0d4icpbc2yyz4gx48ak44la-..",
            "/nix/store/00bgd045z0d4icpbc2yyz4gx48ak44la-ü",
            "/nix/store/00bgd045z0d4icpbc2yyz4gx48ak44la_x",
            "/nix/storex/00bgd045z0d4icpbc2yyz4gx48ak44la-x",
            "/other/00bgd045z0d4icpbc2yyz4gx48ak44la-x",
        ] {
            assert!(sd.parse(bad).is_err(), "{bad}");
        }
        let long = format!("/nix/store/00bgd045z0d4icpbc2yyz4gx48ak44la-{}", "a".repeat(212));
        assert!(sd.parse(&long).is_err());
    }

    /// Issue 11's crash input: 'Б' straddles byte 32 (it was split there).
    #[test]
    fn multibyte_char_straddling_the_hash_part_is_an_error() {
        let sd = StoreDir::new("/nix/store").unwrap();
        let input = format!("/nix/store/{}Б-x", "a".repeat(31));
        let e = sd.parse(&input).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "'/nix/store/{}\\u{{411}}-x' is not a valid store path: hash part contains a character outside nix-base32",
                "a".repeat(31)
            )
        );
    }

    /// A 2-, 3- and 4-byte character at every byte offset of a base name
    /// (replacing bytes, so the byte length stays that of a valid one).
    #[test]
    fn multibyte_char_at_every_offset_is_refused() {
        let base = format!("00bgd045z0d4icpbc2yyz4gx48ak44la-{}", "x".repeat(20));
        assert!(StorePath::from_base_name(&base).is_ok());
        for c in ['Б', '€', '😀'] {
            let mut enc = [0u8; 4];
            let cb = c.encode_utf8(&mut enc).as_bytes();
            for at in 0..=base.len() {
                let mut b = base.as_bytes().to_vec();
                b.splice(at..(at + cb.len()).min(b.len()), cb.iter().copied());
                let s = String::from_utf8(b).unwrap();
                let e = StorePath::from_base_name(&s).unwrap_err().to_string();
                assert!(e.contains(&shown(&s)) && e.contains("\\u{"), "{at}: {e}");
                assert!(StoreDir::new("/nix/store")
                    .unwrap()
                    .parse(&format!("/nix/store/{s}"))
                    .is_err());
            }
        }
        // In the store directory part too.
        assert!(StoreDir::new("/nix/store")
            .unwrap()
            .parse(&format!("/nix/stБre/{base}"))
            .is_err());
    }

    #[test]
    fn shown_escapes_and_bounds() {
        assert_eq!(shown("a\nБ'\\"), "a\\n\\u{411}\\'\\\\");
        let long = shown(&"Б".repeat(100_000));
        assert!(long.len() <= SHOWN_MAX_CHARS + '…'.len_utf8(), "{}", long.len());
        assert!(long.ends_with('…') && long.starts_with("\\u{411}"));
        assert_eq!(shown(&"a".repeat(SHOWN_MAX_CHARS)), "a".repeat(SHOWN_MAX_CHARS));
    }
}
