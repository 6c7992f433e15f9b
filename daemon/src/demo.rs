//! The demo: a small lower store made without Nix (text objects whose store
//! paths are computed exactly as Nix computes `builtins.toFile` paths, with
//! references between them, and a derivation naming one as its output),
//! written to a directory, indexed through the registration importer and
//! served. Also the fixture generator of the tests.

use sha2::{Digest, Sha256};
use std::fs;
use std::path::Path;

use crate::index::import::NewPath;
use crate::store::hash::{hex_encode, nix32_encode};
use crate::store::nar::nar_hash;
use crate::store::{StoreDir, StorePath};

/// Nix's `makeTextPath`: the store path of a text object with `refs`.
pub fn text_path(sd: &StoreDir, name: &str, contents: &[u8], refs: &[StorePath]) -> StorePath {
    let mut ty = String::from("text");
    let mut sorted: Vec<&StorePath> = refs.iter().collect();
    sorted.sort();
    for r in sorted {
        ty.push(':');
        ty.push_str(&sd.display(r));
    }
    let inner = hex_encode(&Sha256::digest(contents));
    let fingerprint = format!("{ty}:sha256:{inner}:{}:{name}", sd.as_str());
    let full: [u8; 32] = Sha256::digest(fingerprint.as_bytes()).into();
    let mut compressed = [0u8; 20];
    for (i, b) in full.iter().enumerate() {
        compressed[i % 20] ^= b;
    }
    StorePath::from_owned_base_name(format!("{}-{name}", nix32_encode(&compressed)))
        .expect("generated store path is valid")
}

/// Write one text object into `lower` and describe it for import.
pub fn add_text(
    lower: &Path,
    sd: &StoreDir,
    name: &str,
    contents: &str,
    refs: &[StorePath],
) -> std::io::Result<NewPath> {
    let p = text_path(sd, name, contents.as_bytes(), refs);
    let obj = lower.join(p.base_name());
    if !obj.exists() {
        fs::write(&obj, contents)?;
    }
    let (nar_hash, nar_size) = nar_hash(&obj)?;
    let mut references = refs.to_vec();
    references.sort();
    Ok(NewPath {
        ca: Some(format!(
            "text:sha256:{}",
            nix32_encode(&Sha256::digest(contents.as_bytes()))
        )),
        path: p,
        nar_hash,
        nar_size,
        references,
        deriver: None,
        registration_time: None,
        ultimate: false,
        sigs: Vec::new(),
    })
}

/// A layered lower store: `layers` levels of `width` text objects, each
/// referencing every object of the level below, plus a derivation whose
/// output is the top object. Returns the entries in dependency order.
pub fn generate(lower: &Path, sd: &StoreDir, layers: usize, width: usize) -> std::io::Result<Vec<NewPath>> {
    fs::create_dir_all(lower)?;
    let mut all = Vec::new();
    let mut below: Vec<StorePath> = Vec::new();
    for l in 0..layers {
        let mut this = Vec::new();
        for w in 0..width {
            let refs: Vec<StorePath> = below.clone();
            let body = format!(
                "layer {l} item {w}\n{}",
                refs.iter()
                    .map(|r| format!("uses {}\n", sd.display(r)))
                    .collect::<String>()
            );
            let e = add_text(lower, sd, &format!("demo-l{l}-{w}"), &body, &refs)?;
            this.push(e.path.clone());
            all.push(e);
        }
        below = this;
    }
    if let Some(top) = below.first() {
        let drv = format!(
            "Derive([(\"out\",\"{}\",\"\",\"\")],[],[],\"x86_64-linux\",\"/bin/sh\",[],[(\"out\",\"{}\")])",
            sd.display(top),
            sd.display(top)
        );
        let e = add_text(lower, sd, "demo-top.drv", &drv, &[])?;
        let drv_path = e.path.clone();
        all.push(e);
        for e in all.iter_mut() {
            if &e.path == top {
                e.deriver = Some(drv_path.clone());
            }
        }
    }
    Ok(all)
}

/// The registration text (`nix-store --dump-db` format) of `entries`.
pub fn registration(sd: &StoreDir, entries: &[NewPath]) -> String {
    let mut s = String::new();
    for e in entries {
        s.push_str(&format!(
            "{}\n{}\n{}\n{}\n{}\n",
            sd.display(&e.path),
            e.nar_hash.to_nix32_prefixed(),
            e.nar_size,
            e.deriver.as_ref().map(|d| sd.display(d)).unwrap_or_default(),
            e.references.len()
        ));
        for r in &e.references {
            s.push_str(&sd.display(r));
            s.push('\n');
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_path_matches_nix() {
        // Expected paths printed by real Nix 2.26.3 (Debian trixie's nix-bin):
        //   nix-instantiate --readonly-mode --eval -E 'builtins.toFile "hello" "hello\n"'
        //   nix-instantiate --readonly-mode --eval -E 'builtins.toFile "a" "x"'
        //   nix-instantiate --readonly-mode --eval -E 'builtins.toFile "b" "ref ${builtins.toFile "a" "x"}"'
        let sd = StoreDir::new("/nix/store").unwrap();
        let hello = text_path(&sd, "hello", b"hello\n", &[]);
        assert_eq!(sd.display(&hello), "/nix/store/nmrmdcw1bfnl35a893n7nyhw4xa5vy08-hello");
        let a = text_path(&sd, "a", b"x", &[]);
        assert_eq!(sd.display(&a), "/nix/store/12wigjpizrn8axaqxj288q1b751qmwya-a");
        // With a reference: the referenced path is part of the fingerprint.
        let b_contents = format!("ref {}", sd.display(&a));
        let b = text_path(&sd, "b", b_contents.as_bytes(), std::slice::from_ref(&a));
        assert_eq!(sd.display(&b), "/nix/store/kbnsdqvza4r1hzcr5vs2bhx8kv150g37-b");
    }
}
