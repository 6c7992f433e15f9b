//! Derived paths as Nix clients send them: a store path (`/nix/store/x`), or
//! outputs of a derivation (`/nix/store/x.drv!out,dev`, `…!*`). Parsed once,
//! where a request is decoded; handlers ask [`DerivedPath::path`] and
//! [`DerivedPath::outputs`] instead of splitting on `!` themselves.
//!
//! Invariants: [`DerivedPath::as_str`] is the text as it came, byte for
//! byte (it is what an error names and what the test client sends); the
//! store path is not validated here (the store directory is the server's:
//! `LowerStore::path` checks it).

use std::fmt;

/// A derived path: its text, and where its `!` is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DerivedPath {
    text: String,
    bang: Option<usize>,
}

/// The outputs a derived path asks for: `*` (all) or a list of names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outputs<'a>(&'a str);

impl DerivedPath {
    pub fn parse(text: String) -> Self {
        let bang = text.find('!');
        DerivedPath { text, bang }
    }

    /// The store path (the derivation, for outputs).
    pub fn path(&self) -> &str {
        &self.text[..self.bang.unwrap_or(self.text.len())]
    }

    /// The outputs asked for; `None` for a plain store path.
    pub fn outputs(&self) -> Option<Outputs<'_>> {
        self.bang.map(|b| Outputs(&self.text[b + 1..]))
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl<'a> Outputs<'a> {
    /// Every output (`*`).
    pub const ALL: Outputs<'static> = Outputs("*");

    /// The names as listed (`*` among them means every output).
    pub fn names(&self) -> impl Iterator<Item = &'a str> {
        self.0.split(',')
    }

    /// Whether output `name` is asked for.
    pub fn wants(&self, name: &str) -> bool {
        self.names().any(|w| w == "*" || w == name)
    }
}

impl fmt::Display for DerivedPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl From<String> for DerivedPath {
    fn from(text: String) -> Self {
        DerivedPath::parse(text)
    }
}

impl From<&str> for DerivedPath {
    fn from(text: &str) -> Self {
        DerivedPath::parse(text.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_outputs_and_all_parse_and_render_as_sent() {
        let p = DerivedPath::from("/nix/store/x-a");
        assert_eq!((p.path(), p.outputs()), ("/nix/store/x-a", None));
        let d = DerivedPath::from("/nix/store/x-a.drv!out,dev");
        assert_eq!(d.path(), "/nix/store/x-a.drv");
        let o = d.outputs().unwrap();
        assert_eq!(o.names().collect::<Vec<_>>(), ["out", "dev"]);
        assert!(o.wants("dev") && !o.wants("doc"));
        let all = DerivedPath::from("/nix/store/x-a.drv!*");
        assert!(all.outputs().unwrap().wants("anything"));
        assert_eq!(all.outputs(), Some(Outputs::ALL));
        for t in ["/nix/store/x-a.drv!out,dev", "a!", "!", "a!b!c", ""] {
            assert_eq!(DerivedPath::from(t).to_string(), t);
        }
        assert_eq!(
            DerivedPath::from("a!b!c")
                .outputs()
                .unwrap()
                .names()
                .collect::<Vec<_>>(),
            ["b!c"]
        );
    }
}
