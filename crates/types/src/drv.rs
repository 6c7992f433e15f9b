//! Reading the outputs of a derivation (`.drv`, ATerm) from the lower directory.
//!
//! The index needs a derivation's output names and paths for
//! `QueryDerivationOutputMap` and `QueryValidDerivers`; the rest of the
//! derivation is parsed only to check the file is well formed up to its outputs.

/// A derivation's outputs as the index and the gRPC backend answer them:
/// output name and, for input-addressed outputs, its store path.
pub type OutputMap = Vec<(String, Option<super::StorePath>)>;

/// One output of a derivation as its `.drv` file lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrvOutput {
    pub name: String,
    /// Empty for floating content-addressed or deferred outputs.
    pub path: String,
}

/// A `.drv` file that is not in Nix's ATerm derivation format: where, and what
/// was expected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed derivation at byte {pos}: {what}")]
pub struct DrvParseError {
    pub(crate) pos: usize,
    pub what: &'static str,
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn err(&self, what: &'static str) -> DrvParseError {
        DrvParseError { pos: self.pos, what }
    }
    fn expect(&mut self, lit: &[u8], what: &'static str) -> Result<(), DrvParseError> {
        if self.b[self.pos..].starts_with(lit) {
            self.pos += lit.len();
            Ok(())
        } else {
            Err(self.err(what))
        }
    }
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }
    fn string(&mut self) -> Result<String, DrvParseError> {
        self.expect(b"\"", "expected '\"'")?;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    let c = *self
                        .b
                        .get(self.pos + 1)
                        .ok_or_else(|| self.err("unterminated escape"))?;
                    out.push(match c {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        other => other,
                    });
                    self.pos += 2;
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
        String::from_utf8(out).map_err(|_| self.err("string is not UTF-8"))
    }
}

/// Parse the output list of a derivation in ATerm form.
pub fn parse_outputs(bytes: &[u8]) -> Result<Vec<DrvOutput>, DrvParseError> {
    let mut c = Cursor { b: bytes, pos: 0 };
    if c.b.starts_with(b"DrvWithVersion(") {
        c.pos = "DrvWithVersion(".len();
        c.string()?;
        c.expect(b",", "expected ',' after the version")?;
    } else {
        c.expect(b"Derive(", "expected 'Derive('")?;
    }
    c.expect(b"[", "expected '[' opening the outputs")?;
    let mut outs = Vec::new();
    if c.peek() == Some(b']') {
        c.pos += 1;
    } else {
        loop {
            c.expect(b"(", "expected '(' opening an output")?;
            let name = c.string()?;
            c.expect(b",", "expected ','")?;
            let path = c.string()?;
            c.expect(b",", "expected ','")?;
            c.string()?; // hash algorithm
            c.expect(b",", "expected ','")?;
            c.string()?; // hash
            c.expect(b")", "expected ')' closing an output")?;
            outs.push(DrvOutput { name, path });
            match c.peek() {
                Some(b',') => c.pos += 1,
                Some(b']') => {
                    c.pos += 1;
                    break;
                }
                _ => return Err(c.err("expected ',' or ']' in the outputs")),
            }
        }
    }
    c.expect(b",", "expected ',' after the outputs")?;
    Ok(outs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_input_addressed_outputs() {
        let drv = br#"Derive([("dev","/nix/store/8qlfcic10lw5304gqm8q45nr7g7jl62b-x-dev","",""),("out","/nix/store/g7kn7i1a3h3y4v8yfdcq1sdmvx4fp3wx-x","","")],[],[],"x86_64-linux","/bin/sh",["-c","echo \"hi\\n\" > $out"],[("out","/nix/store/g7kn7i1a3h3y4v8yfdcq1sdmvx4fp3wx-x")])"#;
        let o = parse_outputs(drv).unwrap();
        assert_eq!(o.len(), 2);
        assert_eq!(
            o[0],
            DrvOutput {
                name: "dev".into(),
                path: "/nix/store/8qlfcic10lw5304gqm8q45nr7g7jl62b-x-dev".into()
            }
        );
        assert_eq!(o[1].name, "out");
    }

    #[test]
    fn floating_ca_output_has_no_path() {
        let o = parse_outputs(br#"Derive([("out","","r:sha256","")],[],[],"s","b",[],[])"#).unwrap();
        assert_eq!(
            o,
            vec![DrvOutput {
                name: "out".into(),
                path: String::new()
            }]
        );
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for bad in [
            &b""[..],
            b"Derive(",
            b"Derive([(\"out\"",
            b"Derive([(\"a\",\"b\",\"c\",\"d\")",
            b"Derive([(\"a\\",
            b"xyz",
        ] {
            assert!(parse_outputs(bad).is_err());
        }
    }
}
