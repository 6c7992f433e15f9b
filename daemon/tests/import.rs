//! Import and verify on generated lower dirs, including every refusal.

mod common;

use common::Fixture;
use snix_lower_store_index::import::{self, ImportError, ImportOptions};
use snix_lower_store_index::PathInfoIndex;
use snix_lower_store_types::lower::LowerDir;
use snix_lower_store_types::path_info::PathInfo;
use snix_lower_store_types::NarHash;

fn count(f: &Fixture) -> u64 {
    PathInfoIndex::open_or_create(&f.state, "/nix/store")
        .unwrap()
        .count()
        .unwrap()
}

/// `import` of `batch` into the fixture's index, every object's content
/// checked against its NAR hash.
fn import_checked(f: &Fixture, lower: &LowerDir, batch: Vec<PathInfo>) -> Result<import::ImportReport, ImportError> {
    import::import(
        &f.state,
        &f.sd,
        lower,
        batch,
        ImportOptions {
            check_content: true,
            ..Default::default()
        },
    )
}

fn rejected(r: Result<import::ImportReport, ImportError>) -> Vec<String> {
    match r {
        Err(ImportError::Rejected(p)) => p,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn registration_round_trip_and_idempotence() {
    let f = Fixture::new();
    let text = snix_lower_store_testkit::demo::registration(&f.sd, &f.entries);
    let batch = import::parse_registration(&text, &f.sd, "reg").unwrap();
    assert_eq!(batch.len(), f.entries.len());
    let lower = LowerDir::open(&f.lower).unwrap();
    let r = import::import(&f.state, &f.sd, &lower, batch.clone(), ImportOptions::default()).unwrap();
    assert_eq!((r.added, r.unchanged), (f.entries.len(), 0));
    let r = import::import(&f.state, &f.sd, &lower, batch, ImportOptions::default()).unwrap();
    assert_eq!((r.added, r.unchanged), (0, f.entries.len()));
}

#[test]
fn refusals_leave_the_index_as_it_was() {
    let f = Fixture::new();
    let lower = LowerDir::open(&f.lower).unwrap();
    import::import(
        &f.state,
        &f.sd,
        &lower,
        f.entries[..2].to_vec(),
        ImportOptions::default(),
    )
    .unwrap();
    assert_eq!(count(&f), 2);

    // A reference outside index and batch.
    let p = rejected(import::import(
        &f.state,
        &f.sd,
        &lower,
        vec![f.entries[4].clone()],
        ImportOptions::default(),
    ));
    assert!(
        p.iter().any(|m| m.contains("neither indexed nor in this import")),
        "{p:?}"
    );

    // A path not in the lower dir.
    let mut ghost = f.entries[2].clone();
    std::fs::remove_file(f.lower.join(ghost.path.base_name())).unwrap();
    let p = rejected(import::import(
        &f.state,
        &f.sd,
        &lower,
        vec![ghost.clone()],
        ImportOptions::default(),
    ));
    assert!(p.iter().any(|m| m.contains("not present in the lower dir")), "{p:?}");

    // Wrong content, caught by --check-content only.
    ghost = f.entries[3].clone();
    ghost.nar_hash = NarHash([7; 32]);
    let p = rejected(import_checked(&f, &lower, vec![ghost.clone()]));
    assert!(p.iter().any(|m| m.contains("content does not match")), "{p:?}");

    // A changed hash for an indexed path.
    let mut changed = f.entries[0].clone();
    changed.nar_hash = NarHash([9; 32]);
    let p = rejected(import::import(
        &f.state,
        &f.sd,
        &lower,
        vec![changed],
        ImportOptions::default(),
    ));
    assert!(
        p.iter().any(|m| m.contains("already indexed with a different")),
        "{p:?}"
    );

    // All or nothing: one bad entry among good ones writes none of them.
    let mut batch = f.entries[3..].to_vec();
    batch.push(ghost);
    let _ = rejected(import_checked(&f, &lower, batch));
    assert_eq!(count(&f), 2);
}

#[test]
fn malformed_sources_are_parse_errors() {
    let f = Fixture::new();
    let p = f.full(0);
    for (text, want) in [
        (format!("{p}\nsha256:xyz\n1\n\n0\n"), "invalid NAR hash"),
        (format!("{p}\n{}\nten\n\n0\n", "0".repeat(64)), "not a number"),
        (format!("{p}\n{}\n10\n\n2\n{p}\n", "0".repeat(64)), "file ends"),
        (
            format!("/tmp/x\n{}\n10\n\n0\n", "0".repeat(64)),
            "not in the store directory",
        ),
    ] {
        let e = import::parse_registration(&text, &f.sd, "reg").unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
    }
    for (json, want) in [
        ("[1]", "not an object"),
        ("{\"/nix/store/x\": {}}", "not a valid store path"),
        ("nope", "not JSON"),
    ] {
        let e = import::parse_path_info_json(json, &f.sd, "json")
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{e}");
    }
}

#[test]
fn path_info_json_formats_1_and_2() {
    let f = Fixture::new();
    let e = &f.entries[2];
    let r0 = f.entries[0].path.base_name();
    let v1 = serde_json::json!({
        f.full(2): {
            "narHash": e.nar_hash.to_sri(), "narSize": e.nar_size,
            "references": [format!("/nix/store/{r0}")], "deriver": null,
            "registrationTime": 1700000000u64, "ultimate": true, "signatures": ["k:cw=="],
            "ca": "text:sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s"
        }
    });
    let v2 = serde_json::json!({"version": 2, "info": {
        e.path.base_name(): {
            "version": 2, "storeDir": "/nix/store",
            "narHash": e.nar_hash.to_sri(), "narSize": e.nar_size,
            "references": [r0], "deriver": null, "registrationTime": 1700000000u64,
            "ultimate": true, "signatures": ["k:cw=="],
            "ca": {"method": "text", "hash": "sha256-LCa0a2j/xo/5m0U8HTBBNBNCLXBkg7+g+YpeiGJm564="}
        }
    }});
    let a = import::parse_path_info_json(&v1.to_string(), &f.sd, "v1").unwrap();
    let b = import::parse_path_info_json(&v2.to_string(), &f.sd, "v2").unwrap();
    assert_eq!(a[0].path, b[0].path);
    assert_eq!(a[0].references, b[0].references);
    assert_eq!(a[0].nar_hash, e.nar_hash);
    assert_eq!(b[0].sigs.iter().map(|s| s.to_string()).collect::<Vec<_>>(), ["k:cw=="]);
    assert!(b[0].ca.as_ref().unwrap().render().starts_with("text:sha256:"));
    assert_eq!(b[0].registration_time, 1700000000);
}

#[test]
fn nix_db_is_read_with_its_schema() {
    let f = Fixture::new();
    // A directory name with what SQLite's URI syntax would read otherwise.
    let dir = f.dir.path().join("nix 100%?var#db");
    std::fs::create_dir(&dir).unwrap();
    let db = dir.join("db.sqlite");
    common::write_nix_db(&db, &f.sd, &f.entries);
    let batch = import::read_nix_db(&db, &f.sd).unwrap();
    assert_eq!(batch.len(), f.entries.len());
    let lower = LowerDir::open(&f.lower).unwrap();
    let r = import_checked(&f, &lower, batch).unwrap();
    assert_eq!(r.added, f.entries.len());
    let idx = PathInfoIndex::open(&f.state, "/nix/store").unwrap();
    let top = f.entries.iter().find(|e| e.deriver.is_some()).unwrap();
    assert_eq!(idx.path_info(&top.path).unwrap().unwrap().references, top.references);
}

#[test]
fn verify_finds_missing_and_modified_paths() {
    let f = Fixture::new();
    f.import_all();
    let idx = PathInfoIndex::open(&f.state, "/nix/store").unwrap();
    let lower = LowerDir::open(&f.lower).unwrap();
    assert!(snix_lower_store::verify::verify(&idx.all_hashes().unwrap(), &lower, &f.sd, true).is_empty());
    std::fs::write(f.lower.join(f.entries[1].path.base_name()), "tampered").unwrap();
    assert!(snix_lower_store::verify::verify(&idx.all_hashes().unwrap(), &lower, &f.sd, false).is_empty());
    let p = snix_lower_store::verify::verify(&idx.all_hashes().unwrap(), &lower, &f.sd, true);
    assert!(p.len() == 1 && p[0].contains("was modified"), "{p:?}");
    std::fs::remove_file(f.lower.join(f.entries[0].path.base_name())).unwrap();
    let p = snix_lower_store::verify::verify(&idx.all_hashes().unwrap(), &lower, &f.sd, false);
    assert!(p.len() == 1 && p[0].contains("not present"), "{p:?}");
}

/// Issue 11: the store path that panicked `StorePath::from_base_name` (a
/// multi-byte character straddling byte 32), in each importer: a refusal
/// naming the entry (and for registrations the line) and the path, escaped;
/// through the CLI, a failed import that wrote nothing.
#[test]
fn multibyte_store_path_is_refused_naming_entry_and_line() {
    use snix_lower_store_types::path::shown;
    let f = Fixture::new();
    let crash = format!("/nix/store/{}Б-x", "a".repeat(31));
    let want_path = shown(&crash);
    assert!(want_path.contains("\\u{411}"), "{want_path}");

    // Registration: entry 2's path (and every reference to it) replaced.
    let text = snix_lower_store_testkit::demo::registration(&f.sd, &f.entries).replace(&f.full(1), &crash);
    let line = 6 + f.entries[0].references.len();
    let e = import::parse_registration(&text, &f.sd, "reg").unwrap_err().to_string();
    assert!(e.contains(&format!("reg: entry 2: line {line}: ")), "{e}");
    assert!(e.contains(&want_path) && e.contains("is not a valid store path"), "{e}");

    // The same file through `import`: refused, nothing written.
    let reg = f.dir.path().join("reg");
    std::fs::write(&reg, &text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_snix-lower-store"))
        .args(["--log-target", "stderr", "import", "--registration"])
        .arg(&reg)
        .arg("--lower-dir")
        .arg(&f.lower)
        .arg("--state-dir")
        .arg(&f.state)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("entry 2: line {line}: ")) && stderr.contains(&want_path),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(count(&f), 0, "nothing imported");

    // path-info JSON: as a key (entry 1) and as a reference of entry 2.
    let e0 = &f.entries[0];
    let obj = |path: &str, refs: Vec<String>| serde_json::json!({"path": path, "narHash": e0.nar_hash.to_sri(), "narSize": e0.nar_size, "references": refs});
    let json = serde_json::json!({ &crash: obj(&crash, vec![]) });
    let e = import::parse_path_info_json(&json.to_string(), &f.sd, "j")
        .unwrap_err()
        .to_string();
    assert!(e.contains("j: entry 1: ") && e.contains(&want_path), "{e}");
    // The legacy array form keeps the order.
    let json = serde_json::json!([obj(&f.full(0), vec![]), obj(&f.full(1), vec![crash.clone()])]);
    let e = import::parse_path_info_json(&json.to_string(), &f.sd, "j")
        .unwrap_err()
        .to_string();
    assert!(e.contains("j: entry 2: ") && e.contains(&want_path), "{e}");
}

/// A `--json-format 2` content address with an empty or short digest (its
/// nix-base32 rendering underflowed on an empty one): a refusal naming the entry.
#[test]
fn v2_content_address_with_a_wrong_digest_length_is_refused() {
    let f = Fixture::new();
    let e0 = &f.entries[0];
    for hash in ["sha256-", "sha256-AAAA", "md4-AAAA", "sha256-Б"] {
        let json = serde_json::json!({"version": 2, "info": { e0.path.base_name(): {
            "version": 2, "narHash": e0.nar_hash.to_sri(), "narSize": e0.nar_size, "references": [],
            "ca": {"method": "text", "hash": hash}
        }}});
        let e = import::parse_path_info_json(&json.to_string(), &f.sd, "j")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("j: entry 1: ca.hash"), "{hash}: {e}");
    }
}

/// A registration carries no `ca`; imported from it, text, source and flat
/// sha256 paths get exactly the `ca` Nix recorded, the others none.
#[test]
fn registration_import_proves_content_addresses_nix_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let lower_dir = dir.path().join("store");
    std::fs::create_dir(&lower_dir).unwrap();
    let (doc, reg) = common::nix_made_lower(&lower_dir);
    let sd = snix_lower_store_types::StoreDir::new("/nix/store").unwrap();
    let batch = import::parse_registration(&reg, &sd, "reg").unwrap();
    assert!(batch.iter().all(|e| e.ca.is_none()));
    let lower = LowerDir::open(&lower_dir).unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    // check_content: the recreated objects are byte for byte what Nix hashed.
    let opts = ImportOptions {
        check_content: true,
        ..Default::default()
    };
    let r = import::import(&state, &sd, &lower, batch, opts).unwrap();
    assert_eq!(r.added, 9);
    let idx = PathInfoIndex::open(&state, "/nix/store").unwrap();
    let mut proven = 0;
    for e in doc["entries"].as_array().unwrap() {
        let p = sd.parse(e["path"].as_str().unwrap()).unwrap();
        let got = idx.path_info(&p).unwrap().unwrap().ca;
        if e["kind"] == "unprovable" {
            assert_eq!(got, None, "{p}");
        } else {
            assert_eq!(got.map(|c| c.render()).as_deref(), e["nix_ca"].as_str(), "{p}");
            proven += 1;
        }
    }
    assert_eq!(proven, 7);

    // --no-ca-proof: the same registration keeps no ca at all.
    let state = dir.path().join("state-off");
    std::fs::create_dir(&state).unwrap();
    let batch = import::parse_registration(&reg, &sd, "reg").unwrap();
    let opts = ImportOptions {
        ca_proof: snix_lower_store_types::ca_proof::CaProofOptions::OFF,
        ..Default::default()
    };
    import::import(&state, &sd, &lower, batch, opts).unwrap();
    let idx = PathInfoIndex::open(&state, "/nix/store").unwrap();
    for p in idx.all_paths().unwrap() {
        assert_eq!(idx.path_info(&p).unwrap().unwrap().ca, None, "{p}");
    }
}
