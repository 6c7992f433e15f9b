//! `import` checks every supplied content address as Nix does before it
//! registers a path: the store path recomputed from the `ca` (with the
//! path's references, `:self` included) must be the path itself. Real
//! values: `tests/data/ca-check-vectors.json`, made by Nix 2.26.3 with
//! `tests/data/make-ca-check-vectors.sh`. One bad entry refuses the whole
//! import, naming the entry; nothing is written.

mod common;

use snix_lower_store_index::import::{self, ImportOptions};
use snix_lower_store_index::PathInfoIndex;
use snix_lower_store_types::content_address::ContentAddress;
use snix_lower_store_types::lower::LowerDir;
use snix_lower_store_types::path_info::PathInfo;
use snix_lower_store_types::StoreDir;

const VECTORS: &str = include_str!("../../crates/types/tests/data/ca-check-vectors.json");

struct Setup {
    _dir: tempfile::TempDir,
    state: std::path::PathBuf,
    lower: LowerDir,
    sd: StoreDir,
    batch: Vec<PathInfo>,
}

/// A lower dir holding an (empty) object per vector, an empty state dir,
/// and the vectors (but the `.drv`) as `import` reads them from Nix's
/// path-info JSON.
fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (lower_dir, state) = (dir.path().join("lower"), dir.path().join("state"));
    std::fs::create_dir(&lower_dir).unwrap();
    std::fs::create_dir(&state).unwrap();
    let sd = StoreDir::new("/nix/store").unwrap();
    let mut batch = import::parse_path_info_json(VECTORS, &sd, "ca-check-vectors.json").unwrap();
    // The `.drv` would be read at import (its outputs) and is not in the
    // vectors; its text `ca` is checked by the unit tests.
    batch.retain(|e| !e.path.base_name().ends_with(".drv"));
    for e in &batch {
        std::fs::write(lower_dir.join(e.path.base_name()), b"").unwrap();
    }
    let lower = LowerDir::open(&lower_dir).unwrap();
    Setup {
        _dir: dir,
        state,
        lower,
        sd,
        batch,
    }
}

impl Setup {
    fn import(&self, batch: Vec<PathInfo>) -> Result<import::ImportReport, import::ImportError> {
        import::import(&self.state, &self.sd, &self.lower, batch, ImportOptions::default())
    }

    fn indexed(&self) -> u64 {
        PathInfoIndex::open_or_create(&self.state, "/nix/store")
            .unwrap()
            .count()
            .unwrap()
    }

    /// The index of the vector whose `ca` starts with `prefix`.
    fn find(&self, prefix: &str) -> usize {
        self.batch
            .iter()
            .position(|e| e.ca.as_ref().unwrap().render().starts_with(prefix))
            .unwrap()
    }
}

#[test]
fn every_ca_real_nix_recorded_is_imported_as_recorded() {
    let s = setup();
    assert_eq!(s.batch.len(), 12);
    assert_eq!(s.import(s.batch.clone()).unwrap().added, 12);
    let idx = PathInfoIndex::open(&s.state, "/nix/store").unwrap();
    for e in &s.batch {
        let info = idx.path_info(&e.path).unwrap().unwrap();
        assert_eq!(info.ca, e.ca, "{}", e.path);
    }
}

/// Each refusal names the entry, says why, and leaves the index empty.
#[test]
fn garbage_or_mismatching_ca_refuses_the_import_naming_the_entry() {
    let s = setup();
    let flat = s.find("fixed:sha256:");
    let source = s.find("fixed:r:sha256:");
    let text_with_refs = s
        .batch
        .iter()
        .position(|e| e.ca.as_ref().unwrap().render().starts_with("text:") && !e.references.is_empty())
        .unwrap();
    let selfish = s.batch.iter().position(|e| e.references.contains(&e.path)).unwrap();
    let other_ca = s.batch[source].ca.as_ref().map(ContentAddress::render);
    let ca_of = |i: usize| s.batch[i].ca.as_ref().unwrap().render();
    let cases: Vec<(usize, Option<String>, &str)> = vec![
        // Another path's (valid) content address.
        (flat, other_ca, "claims to be content-addressed by 'fixed:r:sha256:"),
        // The right digest with the wrong method.
        (
            flat,
            Some(ca_of(flat).replace("fixed:", "fixed:r:")),
            "claims to be content-addressed",
        ),
        (
            text_with_refs,
            Some(ca_of(text_with_refs).replace("text:", "fixed:")),
            "content address allows no references",
        ),
        (
            selfish,
            Some(ca_of(selfish).replace("fixed:r:", "text:")),
            "cannot describe a path that refers to itself",
        ),
    ];
    for (i, ca, why) in cases {
        let mut batch = s.batch.clone();
        batch[i].ca = ca.as_deref().map(|c| ContentAddress::parse(c).unwrap());
        let e = s.import(batch).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, import::ImportError::Rejected(ref p) if p.len() == 1),
            "{msg}"
        );
        let named = format!("{}: ", s.sd.display(&s.batch[i].path));
        assert!(msg.contains(&named) && msg.contains(why), "{ca:?}: {msg}");
        assert_eq!(s.indexed(), 0, "{ca:?}: written despite the refusal");
    }
    // A wrong reference list makes a right `ca` wrong too.
    let mut batch = s.batch.clone();
    batch[text_with_refs].references.clear();
    let msg = s.import(batch).unwrap_err().to_string();
    assert!(
        msg.contains("with its 0 reference(s) that content address makes"),
        "{msg}"
    );
    assert_eq!(s.indexed(), 0);
}

/// A `ca` that is not a content address at all is refused where the source
/// is parsed (the model holds only parsed ones), naming the entry and why.
#[test]
fn garbage_ca_refuses_the_source_naming_the_entry() {
    let s = setup();
    let flat = &s.batch[s.find("fixed:sha256:")];
    let full = s.sd.display(&flat.path);
    for (ca, why) in [
        ("garbage", "is invalid: not a content address"),
        ("fixed:sha256:0000", "is invalid: sha256 hash '0000' has 4 characters"),
        ("fixed:sha3:00", "is invalid: unknown hash algorithm 'sha3'"),
    ] {
        let mut doc: serde_json::Value = serde_json::from_str(VECTORS).unwrap();
        doc[&full]["ca"] = ca.into();
        let e = import::parse_path_info_json(&doc.to_string(), &s.sd, "v.json").unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, import::ImportError::Parse { .. }), "{msg}");
        assert!(msg.contains(&format!("{full}: ")) && msg.contains(why), "{ca}: {msg}");
        assert_eq!(s.indexed(), 0, "{ca}: written despite the refusal");
    }
}

/// Base16 and base64 digests are accepted and stored as Nix renders them.
#[test]
fn other_digest_encodings_are_stored_in_nix32() {
    let s = setup();
    let flat = s.find("fixed:sha256:");
    let nix = s.batch[flat].ca.clone().unwrap();
    let mut batch = s.batch.clone();
    // sha256 of "flat file\n" (f.txt in make-ca-check-vectors.sh), base16.
    let digest = "31b35f77c200b602cb790dc7718b5bae0e282612b552b53ea602628139b3500a";
    batch[flat].ca = Some(ContentAddress::parse(&format!("fixed:sha256:{digest}")).unwrap());
    s.import(batch).unwrap();
    let idx = PathInfoIndex::open(&s.state, "/nix/store").unwrap();
    assert_eq!(idx.path_info(&s.batch[flat].path).unwrap().unwrap().ca, Some(nix));
}

/// A Nix database's `ca` column is checked the same way.
#[test]
fn nix_db_ca_is_checked() {
    let s = setup();
    let db = s.state.parent().unwrap().join("db.sqlite");
    let flat = s.find("fixed:sha256:");
    let sha1 = s.find("fixed:sha1:");
    let mut rows = s.batch.clone();
    // The flat sha256 path claims the flat sha1 path's content address.
    rows[flat].ca = s.batch[sha1].ca.clone();
    // No deriver column, as the database this test wrote before had none.
    for r in &mut rows {
        r.deriver = None;
    }
    common::write_nix_db(&db, &s.sd, &rows);
    let batch = import::read_nix_db(&db, &s.sd).unwrap();
    let msg = s.import(batch).unwrap_err().to_string();
    let named = format!(
        "{}: claims to be content-addressed by 'fixed:sha1:",
        s.sd.display(&s.batch[flat].path)
    );
    assert!(msg.contains(&named), "{msg}");
    assert_eq!(s.indexed(), 0);
}
