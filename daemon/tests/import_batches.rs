//! Import paths the generated fixtures of `tests/import.rs` do not reach: a
//! path listed twice, a new path referencing a batch path that is already
//! indexed, a batch large enough for the one-listing presence check, and a
//! derivation whose output is not a store path. Each asserts the problem text
//! or the rows written.

mod common;

use common::Fixture;
use snix_lower_store_index::import::{self, ImportError, ImportOptions};
use snix_lower_store_index::PathInfoIndex;
use snix_lower_store_testkit::demo::add_text;
use snix_lower_store_types::lower::LowerDir;
use snix_lower_store_types::path_info::PathInfo;
use snix_lower_store_types::NarHash;

fn rejected(r: Result<import::ImportReport, ImportError>) -> Vec<String> {
    match r {
        Err(ImportError::Rejected(p)) => p,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn import(f: &Fixture, batch: Vec<PathInfo>) -> Result<import::ImportReport, ImportError> {
    let lower = LowerDir::open(&f.lower).unwrap();
    import::import(&f.state, &f.sd, &lower, batch, ImportOptions::default())
}

#[test]
fn a_path_listed_twice_is_refused_only_with_different_hashes() {
    let f = Fixture::new();
    let mut other = f.entries[0].clone();
    other.nar_hash = NarHash([3; 32]);
    let p = rejected(import(&f, vec![f.entries[0].clone(), other]));
    assert_eq!(
        p,
        vec![format!("{}: listed twice with different NAR hashes", f.full(0))]
    );

    let r = import(&f, vec![f.entries[0].clone(), f.entries[0].clone()]).unwrap();
    assert_eq!((r.added, r.unchanged), (1, 0));
}

#[test]
fn new_paths_reference_batch_paths_that_were_already_indexed() {
    let f = Fixture::new();
    import(&f, f.entries[..2].to_vec()).unwrap();
    let r = import(&f, f.entries.clone()).unwrap();
    assert_eq!((r.added, r.unchanged), (f.entries.len() - 2, 2));
    let index = PathInfoIndex::open(&f.state, "/nix/store").unwrap();
    let mut checked = 0;
    for e in &f.entries[2..] {
        for r in &e.references {
            assert!(index.referrers(r).unwrap().contains(&e.path), "{:?} -> {:?}", e.path, r);
            checked += 1;
        }
        let info = index.path_info(&e.path).unwrap().unwrap();
        assert_eq!(info.references.len(), e.references.len());
    }
    assert!(checked > 0, "the fixture has references into its first layer");
}

#[test]
fn a_large_batch_is_checked_against_one_listing_of_the_lower_dir() {
    let f = Fixture::new();
    let batch: Vec<PathInfo> = (0..1001)
        .map(|i| add_text(&f.lower, &f.sd, &format!("many-{i}"), &format!("item {i}\n"), &[]).unwrap())
        .collect();
    let gone = &batch[500];
    std::fs::remove_file(f.lower.join(gone.path.base_name())).unwrap();
    let p = rejected(import(&f, batch.clone()));
    assert_eq!(
        p,
        vec![format!(
            "{}: not present in the lower dir {}",
            f.sd.display(&gone.path),
            LowerDir::open(&f.lower).unwrap().root().display()
        )]
    );
    assert_eq!(PathInfoIndex::open(&f.state, "/nix/store").unwrap().count().unwrap(), 0);

    let present: Vec<PathInfo> = batch.iter().filter(|e| e.path != gone.path).cloned().collect();
    let r = import(&f, present).unwrap();
    assert_eq!((r.added, r.unchanged), (1000, 0));
}

#[test]
fn a_derivation_output_that_is_not_a_store_path_is_refused() {
    let f = Fixture::new();
    let drv =
        r#"Derive([("out","/elsewhere/abc","","")],[],[],"x86_64-linux","/bin/sh",[],[("out","/elsewhere/abc")])"#;
    let e = add_text(&f.lower, &f.sd, "bad-output.drv", drv, &[]).unwrap();
    let shown = f.sd.display(&e.path);
    let p = rejected(import(&f, vec![e]));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with(&format!("{shown}: output out: ")), "{p:?}");
    assert_eq!(PathInfoIndex::open(&f.state, "/nix/store").unwrap().count().unwrap(), 0);
}
