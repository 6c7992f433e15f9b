//! Realisations of content-addressed derivation outputs (Nix's experimental
//! `ca-derivations`): which store path an output of a derivation, identified
//! by the derivation's hash modulo and the output name, was built into.
//!
//! Invariants: a [`DrvOutputId`] is always in Nix's canonical form
//! `sha256:<base16>!<output name>` (what `DrvOutput::to_string` prints and
//! what Nix's `Realisations.drvPath` column holds before the `!`), whatever
//! SHA-256 encoding it was parsed from; the JSON of [`Realisation::to_json`]
//! has the keys and layout Nix's daemon sends (keys sorted, compact, store
//! paths as base names, signatures sorted).

use super::{NarHash, StorePath};

/// Longest output name accepted (Nix's store path names are at most 211 bytes).
const MAX_OUTPUT_NAME: usize = 211;

/// `sha256:<base16>!<output>`, canonical.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DrvOutputId {
    /// `sha256:<base16>`, as Nix's `DrvOutput::strHash`.
    pub drv_hash: String,
    pub output: String,
}

impl DrvOutputId {
    /// Parse Nix's `DrvOutput` text form: a SHA-256 in any encoding Nix
    /// prints, `!`, an output name.
    pub fn parse(s: &str) -> Result<Self, String> {
        let shown = super::path::shown(s);
        let (hash, output) = s
            .split_once('!')
            .ok_or_else(|| format!("invalid derivation output id '{shown}': no '!' between hash and output name"))?;
        let h = NarHash::parse(hash).map_err(|e| format!("invalid derivation output id '{shown}': {e}"))?;
        check_output_name(output).map_err(|why| format!("invalid derivation output id '{shown}': {why}"))?;
        Ok(DrvOutputId {
            drv_hash: format!("sha256:{}", h.to_base16()),
            output: output.to_owned(),
        })
    }
}

impl std::fmt::Display for DrvOutputId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}!{}", self.drv_hash, self.output)
    }
}

/// Output names are store path name characters, as Nix requires.
fn check_output_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > MAX_OUTPUT_NAME {
        return Err("output name must be 1 to 211 characters".into());
    }
    if !s.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-._?=".contains(&b)) {
        return Err("output name has a character not allowed in store path names".into());
    }
    Ok(())
}

/// One realisation as Nix's daemon answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Realisation {
    pub id: DrvOutputId,
    pub out_path: StorePath,
    /// Sorted, as Nix's `std::set`.
    pub signatures: Vec<String>,
    /// Realisations this one depends on (Nix 2.26 records them; newer Nix
    /// always sends none), sorted by id.
    pub dependent: Vec<(DrvOutputId, StorePath)>,
}

impl Realisation {
    /// The JSON text Nix's daemon sends for protocol 1.31 and later: keys in
    /// nlohmann's (sorted) order, no spaces.
    pub fn to_json(&self) -> String {
        #[derive(serde::Serialize)]
        struct Json<'a> {
            #[serde(rename = "dependentRealisations")]
            dependent: std::collections::BTreeMap<String, &'a str>,
            id: String,
            #[serde(rename = "outPath")]
            out_path: &'a str,
            signatures: &'a [String],
        }
        serde_json::to_string(&Json {
            dependent: self
                .dependent
                .iter()
                .map(|(id, p)| (id.to_string(), p.base_name()))
                .collect(),
            id: self.id.to_string(),
            out_path: self.out_path.base_name(),
            signatures: &self.signatures,
        })
        .expect("strings always serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "15e0f1ab5c4aa5b6c1e3b4f3a3d0f5b9e7c6c1a0b2d3e4f5a6b7c8d9e0f1a2b3";

    #[test]
    fn ids_are_canonical_whatever_the_encoding() {
        let id = DrvOutputId::parse(&format!("sha256:{HEX}!out")).unwrap();
        assert_eq!(id.to_string(), format!("sha256:{HEX}!out"));
        let h = NarHash::parse(HEX).unwrap();
        let nix32 = DrvOutputId::parse(&format!("{}!out", h.to_nix32_prefixed())).unwrap();
        let sri = DrvOutputId::parse(&format!("{}!out", h.to_sri())).unwrap();
        assert_eq!(nix32, id);
        assert_eq!(sri, id);
    }

    #[test]
    fn bad_ids_are_errors_naming_the_input() {
        for bad in [
            "",
            "sha256:abc!out",
            &format!("sha256:{HEX}"),
            &format!("sha256:{HEX}!"),
            &format!("sha256:{HEX}!a b"),
            "md5:00!out",
            "Б!out",
        ] {
            let e = DrvOutputId::parse(bad).unwrap_err();
            assert!(e.contains("invalid derivation output id"), "{bad}: {e}");
        }
    }

    #[test]
    fn json_has_nix_layout() {
        let p = StorePath::from_base_name("0c7dqd8v1pr0dn6zrl1wy5vgvdwhr1pr-e2e-ca").unwrap();
        let r = Realisation {
            id: DrvOutputId::parse(&format!("sha256:{HEX}!out")).unwrap(),
            out_path: p.clone(),
            signatures: vec!["k:sig".into()],
            dependent: vec![(DrvOutputId::parse(&format!("sha256:{HEX}!dev")).unwrap(), p)],
        };
        assert_eq!(
            r.to_json(),
            format!(
                r#"{{"dependentRealisations":{{"sha256:{HEX}!dev":"0c7dqd8v1pr0dn6zrl1wy5vgvdwhr1pr-e2e-ca"}},"id":"sha256:{HEX}!out","outPath":"0c7dqd8v1pr0dn6zrl1wy5vgvdwhr1pr-e2e-ca","signatures":["k:sig"]}}"#
            )
        );
    }
}
