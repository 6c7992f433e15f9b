//! The demo: a small lower store made without Nix (text objects whose store
//! paths are computed exactly as Nix computes `builtins.toFile` paths, with
//! references between them, and an input-addressed derivation whose output
//! path is the one Nix computes from it, present with the derivation as its
//! deriver), written to a directory, indexed through the registration
//! importer and served. Also the fixture generator of the tests.
//!
//! Invariant: every path is the one real Nix gives its contents (text paths)
//! or its derivation (output path: `makeOutputPath` of the derivation's hash
//! with its outputs masked), so real Nix accepts the store (`--load-db`,
//! `--gc`, `--verify`).

use sha2::{Digest, Sha256};
use std::fs;
use std::path::Path;

use snix_lower_store_types::content_address::{ContentAddress, Method};
use snix_lower_store_types::fingerprint::make_store_path as store_path;
use snix_lower_store_types::nar::nar_hash;
use snix_lower_store_types::path_info::PathInfo;
use snix_lower_store_types::{StoreDir, StorePath};

/// Nix's `makeTextPath`: the store path of a text object with `refs`.
pub fn text_path(sd: &StoreDir, name: &str, contents: &[u8], refs: &[StorePath]) -> StorePath {
    let mut ty = String::from("text");
    let mut sorted: Vec<&StorePath> = refs.iter().collect();
    sorted.sort();
    for r in sorted {
        ty.push(':');
        ty.push_str(&sd.display(r));
    }
    store_path(sd, &ty, &Sha256::digest(contents).into(), name)
}

/// Write one text object into `lower` and describe it for import.
pub fn add_text(
    lower: &Path,
    sd: &StoreDir,
    name: &str,
    contents: &str,
    refs: &[StorePath],
) -> std::io::Result<PathInfo> {
    let p = text_path(sd, name, contents.as_bytes(), refs);
    let obj = lower.join(p.base_name());
    if !obj.exists() {
        fs::write(&obj, contents)?;
    }
    let (nar_hash, nar_size) = nar_hash(&obj)?;
    let mut references = refs.to_vec();
    references.sort();
    Ok(PathInfo {
        ca: Some(ContentAddress {
            method: Method::Text,
            algo: "sha256",
            digest: Sha256::digest(contents.as_bytes()).to_vec(),
        }),
        references,
        ..PathInfo::new(p, nar_hash, nar_size)
    })
}

/// A layered lower store: `layers` levels of `width` text objects, each
/// referencing every object of the level below, plus `demo-top.drv` (with the
/// first top object as its input source) and its output, which refers to that
/// object. Returns the entries in dependency order.
pub fn generate(lower: &Path, sd: &StoreDir, layers: usize, width: usize) -> std::io::Result<Vec<PathInfo>> {
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
        all.extend(add_derivation(lower, sd, "demo-top", top)?);
    }
    Ok(all)
}

/// Writes the derivation `name` (input source `src`, output `out`) and its
/// output (a file naming `src`); returns both, the derivation first.
fn add_derivation(lower: &Path, sd: &StoreDir, name: &str, src: &StorePath) -> std::io::Result<[PathInfo; 2]> {
    let src_text = sd.display(src);
    let script = format!("echo {src_text} > $out");
    let masked = derivation_aterm(name, "", &src_text, &script);
    let out = store_path(sd, "output:out", &Sha256::digest(masked.as_bytes()).into(), name);
    let out_text = sd.display(&out);
    let aterm = derivation_aterm(name, &out_text, &src_text, &script);
    let drv = add_text(lower, sd, &format!("{name}.drv"), &aterm, std::slice::from_ref(src))?;
    let obj = lower.join(out.base_name());
    if !obj.exists() {
        fs::write(&obj, format!("{src_text}\n"))?;
    }
    let (nar_hash, nar_size) = nar_hash(&obj)?;
    let built = PathInfo {
        references: vec![src.clone()],
        deriver: Some(drv.path.clone()),
        ..PathInfo::new(out, nar_hash, nar_size)
    };
    Ok([drv, built])
}

/// The ATerm of an input-addressed derivation with one output `out` at `out`
/// (empty: masked, as Nix's `hashDerivationModulo` hashes it), no input
/// derivations, input source `src` and builder `/bin/sh -c script`. No
/// argument holds a character ATerm escapes (`"`, `\\`, newline, tab).
fn derivation_aterm(name: &str, out: &str, src: &str, script: &str) -> String {
    format!(
        "Derive([(\"out\",\"{out}\",\"\",\"\")],[],[\"{src}\"],\"x86_64-linux\",\"/bin/sh\",[\"-c\",\"{script}\"],\
         [(\"builder\",\"/bin/sh\"),(\"name\",\"{name}\"),(\"out\",\"{out}\"),(\"system\",\"x86_64-linux\")])"
    )
}

/// The registration text (`nix-store --dump-db` format) of `entries`.
pub fn registration(sd: &StoreDir, entries: &[PathInfo]) -> String {
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

    #[test]
    fn demo_derivation_and_output_match_nix() {
        // Printed by real Nix 2.26.3 (Debian trixie's nix-bin), with the demo
        // store loaded (`nix-store --load-db`, which refuses a .drv whose
        // output is not the one its hash gives), by evaluating
        //   let d = derivation { name = "demo-top"; system = "x86_64-linux";
        //     builder = "/bin/sh"; args = [ "-c" "echo ${builtins.storePath
        //     /nix/store/kjpjsv53vfh28mdkv6wx9xi1d4bia1vx-demo-l2-0} > $out" ]; };
        //   in d.drvPath + " " + d.outPath
        let sd = StoreDir::new("/nix/store").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let all = generate(dir.path(), &sd, 3, 3).unwrap();
        let shown: Vec<String> = all.iter().map(|e| sd.display(&e.path)).collect();
        let src = "/nix/store/kjpjsv53vfh28mdkv6wx9xi1d4bia1vx-demo-l2-0";
        let drv = "/nix/store/9gs5gql4hqdb5ivvhqagmcb0q7c58v2d-demo-top.drv";
        let out = "/nix/store/w0fa97kkagybjgjzwcaikqaycm3f4m0l-demo-top";
        assert!(shown.iter().any(|p| p == src), "{shown:?}");
        assert!(shown.iter().any(|p| p == drv), "{shown:?}");
        let built = all.iter().find(|e| sd.display(&e.path) == out);
        let built = built.unwrap_or_else(|| panic!("no {out} in {shown:?}"));
        assert_eq!(built.deriver.as_ref().map(|d| sd.display(d)).as_deref(), Some(drv));
        let aterm = fs::read_to_string(dir.path().join(&drv["/nix/store/".len()..])).unwrap();
        assert!(aterm.starts_with(&format!("Derive([(\"out\",\"{out}\",")), "{aterm}");
    }
}
