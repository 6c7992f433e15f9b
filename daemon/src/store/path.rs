//! Store paths (`/nix/store/<hash>-<name>`) and the store directory they live in.
//!
//! Every path that arrives from a client or an import file is parsed here
//! before it reaches the index or the file system: a name can never contain
//! `/`, so a valid store path can never point outside the lower directory.

use std::fmt;

pub const HASH_PART_LEN: usize = 32;
pub const MAX_NAME_LEN: usize = 211;

/// A validated store path, kept as its base name (`<hash>-<name>`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePath(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StorePathError {
    #[error("'{0}' is not in the store directory '{1}'")]
    NotInStore(String, String),
    #[error("'{0}' is not a valid store path: {1}")]
    Invalid(String, &'static str),
}

impl StorePath {
    /// Parse a base name `<32 nix-base32 chars>-<name>`.
    pub fn from_base_name(s: &str) -> Result<Self, StorePathError> {
        let bad = |why| StorePathError::Invalid(s.chars().take(300).collect(), why);
        if s.len() < HASH_PART_LEN + 2 {
            return Err(bad("too short"));
        }
        let (hash, rest) = s.split_at(HASH_PART_LEN);
        if !super::hash::is_nix32(hash) {
            return Err(bad("hash part contains a character outside nix-base32"));
        }
        let name = rest
            .strip_prefix('-')
            .ok_or_else(|| bad("no '-' after the hash part"))?;
        check_name(name).map_err(bad)?;
        Ok(StorePath(s.to_owned()))
    }

    /// A base name read back from our own index, which validated it at
    /// import: not checked again on the hot path.
    pub(crate) fn from_trusted(s: String) -> Self {
        debug_assert!(StorePath::from_base_name(&s).is_ok(), "{s}");
        StorePath(s)
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

/// Nix's rules for the name part of a store path.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("name is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("name is longer than 211 characters");
    }
    if name == "." || name == ".." || name.starts_with(".-") || name.starts_with("..-") {
        return Err("name must not be '.' or '..' or start with such a component");
    }
    if !name
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || b"+-._?=".contains(&c))
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreDir(String);

impl StoreDir {
    pub fn new(dir: &str) -> Result<Self, String> {
        let d = dir.trim_end_matches('/');
        if !d.starts_with('/') || d.is_empty() {
            return Err(format!("store directory '{dir}' must be an absolute path"));
        }
        Ok(StoreDir(d.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parse a full path `<store dir>/<base name>`.
    pub fn parse(&self, full: &str) -> Result<StorePath, StorePathError> {
        let base = full
            .strip_prefix(self.0.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| StorePathError::NotInStore(full.chars().take(300).collect(), self.0.clone()))?;
        StorePath::from_base_name(base)
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
}
