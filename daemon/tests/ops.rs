//! Every op through a real unix socket, with the crate's protocol client.

#[macro_use]
mod common;

use common::{Fixture, Lookups};
use snix_lower_store_protocol::codec::{BuildMode, OutputMap, TrustedFlag};
use snix_lower_store_protocol::request::*;
use snix_lower_store_protocol::wire::WireBuf;
use snix_lower_store_testkit::client::{Client, ClientError};
use snix_lower_store_testkit::demo;
use snix_lower_store_types::nar::NarWriter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn setup(lookups: Lookups) -> (Fixture, Client) {
    let f = Fixture::with_lookups(lookups);
    f.import_all();
    f.serve().await;
    let c = Client::connect(&f.socket, 38).await.unwrap();
    (f, c)
}

fn daemon_err<T: std::fmt::Debug>(r: Result<T, ClientError>) -> String {
    match r {
        Err(ClientError::Daemon(m)) => m,
        other => panic!("expected a daemon error, got {other:?}"),
    }
}

/// `q` gets an error naming its op, and the connection answers the next
/// request. Returns the error text.
async fn refused_then_usable<Q: Request>(c: &mut Client, q: &Q, good: &str) -> String
where
    Q::Reply: std::fmt::Debug,
{
    let name = Q::OP.name();
    let e = daemon_err(c.call(q).await);
    assert!(e.starts_with(name), "{name}: {e}");
    assert!(c.is_valid_path(good).await.unwrap(), "connection unusable after {name}");
    e
}

async fn handshake_reports_version_and_trust(lookups: Lookups) {
    let (_f, c) = setup(lookups).await;
    assert_eq!(c.version.0, 38);
    assert!(c.daemon_version.as_deref().unwrap().starts_with("snix-lower-store "));
    // The test runs as some uid; trust is 1 for root, 2 for anyone else.
    let expect = if rustix::process::geteuid().is_root() {
        TrustedFlag::Trusted
    } else {
        TrustedFlag::NotTrusted
    };
    assert_eq!(c.trust, Some(expect));
}

async fn older_protocols_negotiate_and_too_old_is_a_clear_error(lookups: Lookups) {
    let f = Fixture::with_lookups(lookups);
    f.import_all();
    f.serve().await;
    for minor in [21u8, 25, 26, 33, 37, 39] {
        let mut c = Client::connect(&f.socket, minor).await.unwrap();
        assert_eq!(c.version.0, minor.min(38));
        assert!(c.is_valid_path(&f.full(0)).await.unwrap(), "1.{minor}");
        // Error layout differs before 1.26; the client decodes both.
        let q = QueryReferrers {
            path: "/not/a/store/path".into(),
        };
        let e = daemon_err(c.call(&q).await);
        assert!(e.contains("QueryReferrers"), "{e}");
    }
    let e = match Client::connect(&f.socket, 20).await {
        Err(ClientError::Daemon(m)) => m,
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("1.20 accepted"),
    };
    assert!(e.contains("older than the oldest supported"), "{e}");
}

async fn validity_and_path_info(lookups: Lookups) {
    let (f, mut c) = setup(lookups).await;
    let top = f.entries.iter().position(|e| e.deriver.is_some()).unwrap();
    assert!(c.is_valid_path(&f.full(top)).await.unwrap());
    let missing = format!("/nix/store/{}-missing", "a".repeat(32));
    assert!(!c.is_valid_path(&missing).await.unwrap());
    let info = c.query_path_info(&f.full(top)).await.unwrap().unwrap();
    let e = &f.entries[top];
    assert_eq!(info.nar_hash, e.nar_hash.to_base16());
    assert_eq!(info.nar_size, e.nar_size);
    assert_eq!(info.deriver, Some(f.sd.display(e.deriver.as_ref().unwrap())));
    let mut refs: Vec<String> = e.references.iter().map(|r| f.sd.display(r)).collect();
    refs.sort();
    assert_eq!(info.references, refs);
    // The derivation's output is input-addressed: no content address.
    assert_eq!(info.ca, e.ca.as_ref().map(|c| c.render()));
    assert!(c.query_path_info(&missing).await.unwrap().is_none());
    let v = c.query_valid_paths(&[&f.full(0), &missing, &f.full(1)]).await.unwrap();
    let mut want = vec![f.full(0), f.full(1)];
    want.sort();
    assert_eq!(v, want);
    assert_eq!(c.call(&QueryAllValidPaths).await.unwrap().len(), f.entries.len());
}

async fn referrers_derivers_and_hash_part(lookups: Lookups) {
    let (f, mut c) = setup(lookups).await;
    // Layer 0 items are referenced by both layer 1 items.
    let r = c.call(&QueryReferrers { path: f.full(0) }).await.unwrap();
    let mut want = vec![f.full(2), f.full(3)];
    want.sort();
    assert_eq!(r, want);
    // The top path's deriver is the demo .drv; it is a valid deriver via its outputs.
    let top = f.entries.iter().position(|e| e.deriver.is_some()).unwrap();
    let drv = f.sd.display(f.entries[top].deriver.as_ref().unwrap());
    let derivers = |path: String| QueryValidDerivers { path };
    assert_eq!(c.call(&derivers(f.full(top))).await.unwrap(), vec![drv.clone()]);
    assert!(c.call(&derivers(f.full(0))).await.unwrap().is_empty());
    // QueryDerivationOutputMap.
    let map = c.call(&QueryDerivationOutputMap { path: drv.clone() }).await.unwrap();
    assert_eq!(map, OutputMap(vec![("out".into(), Some(f.full(top)))]));
    // QueryPathFromHashPart.
    let hp = f.entries[1].path.hash_part().to_owned();
    let by_hash = |hash_part: String| QueryPathFromHashPart { hash_part };
    assert_eq!(c.call(&by_hash(hp)).await.unwrap(), Some(f.full(1)));
    assert_eq!(c.call(&by_hash("0".repeat(32))).await.unwrap(), None);
}

async fn missing_substitutes_and_realisations(lookups: Lookups) {
    let (f, mut c) = setup(lookups).await;
    let missing = format!("/nix/store/{}-missing", "b".repeat(32));
    let m = c
        .call(&QueryMissing {
            targets: vec![f.full(0).into(), missing.clone().into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(m.will_build.is_empty());
    assert!(m.will_substitute.is_empty());
    assert_eq!(m.unknown, vec![missing.clone()]);
    assert_eq!((m.download_size, m.nar_size), (0, 0));
    let q = QuerySubstitutablePaths { paths: vec![f.full(0)] };
    assert!(c.call(&q).await.unwrap().is_empty());
    let q = QuerySubstitutablePathInfos {
        paths: vec![(f.full(0), None)],
    };
    assert!(c.call(&q).await.unwrap().0.is_empty());
    let q = QueryRealisation {
        id: "sha256:0000000000000000000000000000000000000000000000000000000000000000!out".into(),
    };
    assert!(c.call(&q).await.unwrap().0.is_empty());
}

/// A derived path as Nix writes it below 1.30 (`StorePathWithOutputs`):
/// "all outputs of this derivation" is the bare `.drv` path, and Nix's
/// daemon reads a bare `.drv` from such clients as `drv!*`. From 1.30 the
/// same bytes mean the `.drv` file itself. One derivation's output is
/// indexed (the demo's), the other's is not; both `.drv` files are.
async fn a_bare_drv_below_1_30_asks_for_all_its_outputs(lookups: Lookups) {
    let mut f = Fixture::with_lookups(lookups);
    let absent = format!("/nix/store/{}-absent", "f".repeat(32));
    let text = format!(r#"Derive([("out","{absent}","","")],[],[],"x86_64-linux","/bin/sh",[],[("out","{absent}")])"#);
    let entry = demo::add_text(&f.lower, &f.sd, "absent-out.drv", &text, &[]).unwrap();
    let unbuilt = f.sd.display(&entry.path);
    f.entries.push(entry);
    let top = f.entries.iter().position(|e| e.deriver.is_some()).unwrap();
    let built = f.sd.display(f.entries[top].deriver.as_ref().unwrap());
    f.import_all();
    f.serve().await;
    let good = f.full(0);
    for minor in [21u8, 29, 30, 38] {
        let mut c = Client::connect(&f.socket, minor).await.unwrap();
        assert_eq!(c.version.0, minor);
        let build = |p: &str| BuildPaths {
            paths: vec![p.into()],
            mode: BuildMode::NORMAL,
            ..Default::default()
        };
        let missing = |p: &str| QueryMissing {
            targets: vec![p.into()],
            ..Default::default()
        };
        // The built derivation: its output and its .drv are both valid.
        assert_eq!(c.call(&build(&built)).await.unwrap(), 1, "1.{minor}");
        assert!(c.call(&missing(&built)).await.unwrap().unknown.is_empty(), "1.{minor}");
        // The unbuilt one: below 1.30 its output is wanted and absent.
        let m = c.call(&missing(&unbuilt)).await.unwrap();
        if minor < 30 {
            assert_eq!(m.unknown, vec![unbuilt.clone()], "1.{minor}");
            let e = refused_then_usable(&mut c, &build(&unbuilt), &good).await;
            assert!(
                e.contains(&format!("('{unbuilt}')")) && e.contains("read-only"),
                "1.{minor}: {e}"
            );
        } else {
            assert!(m.unknown.is_empty(), "1.{minor}: {m:?}");
            assert_eq!(c.call(&build(&unbuilt)).await.unwrap(), 1, "1.{minor}");
            // `drv!*` is how 1.30 asks for the outputs.
            let all = format!("{unbuilt}!*");
            assert_eq!(c.call(&missing(&all)).await.unwrap().unknown, vec![unbuilt.clone()]);
            refused_then_usable(&mut c, &build(&all), &good).await;
        }
    }
}

/// Realisations imported with the paths answer QueryRealisation in Nix's two
/// layouts (output paths before 1.31, realisation JSON from 1.31); unknown ids
/// get the empty set, malformed ids an error that names the op.
async fn query_realisation_in_both_layouts(lookups: Lookups) {
    use snix_lower_store_types::realisation::DrvOutputId;
    let f = Fixture::with_lookups(lookups);
    let hex = "ab".repeat(32);
    let id = DrvOutputId::parse(&format!("sha256:{hex}!out")).unwrap();
    let dep = DrvOutputId::parse(&format!("sha256:{}!dev", "cd".repeat(32))).unwrap();
    import_realisations(&f, &id, &dep);
    f.serve().await;

    let ask = |s: &str| QueryRealisation { id: s.into() };
    let jsons = |r: snix_lower_store_protocol::codec::Realisations| r.0.into_iter().map(|r| r.json).collect::<Vec<_>>();
    let out_paths =
        |r: snix_lower_store_protocol::codec::Realisations| r.0.into_iter().map(|r| r.out_path).collect::<Vec<_>>();
    let mut c = Client::connect(&f.socket, 38).await.unwrap();
    // Any SHA-256 encoding of the id finds it.
    let nix32 = snix_lower_store_types::NarHash::parse(&hex)
        .unwrap()
        .to_nix32_prefixed();
    for asked in [id.to_string(), format!("{nix32}!out")] {
        assert_eq!(
            jsons(c.call(&ask(&asked)).await.unwrap()),
            vec![format!(
                r#"{{"dependentRealisations":{{"{dep}":"{}"}},"id":"{id}","outPath":"{}","signatures":["k1:a","k2:b"]}}"#,
                f.entries[1].path.base_name(),
                f.entries[0].path.base_name()
            )]
        );
    }
    let unknown = c.call(&ask(&format!("sha256:{}!out", "00".repeat(32)))).await.unwrap();
    assert!(jsons(unknown).is_empty());
    match c.call(&ask("not-an-id")).await {
        Err(ClientError::Daemon(m)) => assert!(m.contains("QueryRealisation") && m.contains("not-an-id"), "{m}"),
        other => panic!("expected an error, got {other:?}"),
    }
    assert!(
        c.is_valid_path(&f.full(0)).await.unwrap(),
        "connection unusable after the error"
    );

    let mut old = Client::connect(&f.socket, 30).await.unwrap();
    let known = old.call(&ask(&id.to_string())).await.unwrap();
    assert_eq!(out_paths(known), vec![f.full(0)]);
    let unknown = old
        .call(&ask(&format!("sha256:{}!out", "00".repeat(32))))
        .await
        .unwrap();
    assert!(out_paths(unknown).is_empty());
}

/// Imports two realisations with the paths (`id` giving entry 0 and
/// depending on `dep`, which gives entry 1), after checking that a batch
/// naming an output path that is not valid is refused as a whole.
fn import_realisations(
    f: &Fixture,
    id: &snix_lower_store_types::realisation::DrvOutputId,
    dep: &snix_lower_store_types::realisation::DrvOutputId,
) {
    use snix_lower_store_index::import::{self, ImportOptions, NewRealisation};
    let lower = snix_lower_store_types::lower::LowerDir::open(&f.lower).unwrap();
    let realisations = vec![
        NewRealisation {
            id: id.clone(),
            out_path: f.entries[0].path.clone(),
            signatures: vec!["k2:b".into(), "k1:a".into()],
            dependent: vec![dep.clone()],
        },
        NewRealisation {
            id: dep.clone(),
            out_path: f.entries[1].path.clone(),
            signatures: vec![],
            dependent: vec![],
        },
    ];
    // Refused as a whole when an output path is not valid: nothing written.
    let mut bad = realisations.clone();
    bad[1].out_path = snix_lower_store_types::StorePath::from_base_name(&format!("{}-gone", "d".repeat(32))).unwrap();
    let e = import::import_with_realisations(
        &f.state,
        &f.sd,
        &lower,
        f.entries.clone(),
        bad,
        ImportOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("neither indexed nor in this import") && e.contains("-gone"),
        "{e}"
    );
    import::import_with_realisations(
        &f.state,
        &f.sd,
        &lower,
        f.entries.clone(),
        realisations,
        ImportOptions::default(),
    )
    .unwrap();
}

async fn nar_from_path_matches_the_lower_dir(lookups: Lookups) {
    let (f, mut c) = setup(lookups).await;
    for i in [0, 3] {
        let info = c.query_path_info(&f.full(i)).await.unwrap().unwrap();
        let nar = c.nar_from_path(&f.full(i), info.nar_size).await.unwrap();
        let mut w = NarWriter::new(Vec::new());
        w.write_nar(&f.lower.join(f.entries[i].path.base_name())).unwrap();
        assert_eq!(nar, w.into_inner());
        // The connection is still in step after the NAR.
        assert!(c.is_valid_path(&f.full(i)).await.unwrap());
    }
    let e = daemon_err(c.nar_from_path(&format!("/nix/store/{}-x", "c".repeat(32)), 0).await);
    assert!(e.contains("not valid"), "{e}");
}

async fn gc_and_root_ops_write_nothing(lookups: Lookups) {
    let (f, mut c) = setup(lookups).await;
    // A directory tree (an executable, a symlink, a read-only file)
    // in the lower dir, beside the indexed files: its modes count too.
    {
        use std::os::unix::fs::PermissionsExt;
        let t = f.lower.join("zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-unindexed-tree");
        std::fs::create_dir_all(t.join("share/doc")).unwrap();
        std::fs::write(t.join("share/doc/README"), "a tree\n").unwrap();
        std::fs::write(t.join("run"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(t.join("run"), std::fs::Permissions::from_mode(0o555)).unwrap();
        std::os::unix::fs::symlink("share/doc", t.join("doc")).unwrap();
        std::fs::set_permissions(t.join("share/doc/README"), std::fs::Permissions::from_mode(0o444)).unwrap();
    }
    let before = snapshot(&f);
    assert_eq!(c.call(&AddTempRoot { path: f.full(0) }).await.unwrap(), 1);
    let q = AddIndirectRoot {
        path: "/tmp/some-root".into(),
    };
    assert_eq!(c.call(&q).await.unwrap(), 1);
    assert_eq!(c.call(&SyncWithGC).await.unwrap(), 1);
    assert_eq!(c.call(&OptimiseStore).await.unwrap(), 1);
    assert!(c.call(&FindRoots).await.unwrap().0.is_empty(), "FindRoots: no roots");
    let q = VerifyStore {
        check_contents: true,
        repair: false,
    };
    assert!(!c.call(&q).await.unwrap());
    // EnsurePath of a present path.
    assert_eq!(c.call(&EnsurePath { path: f.full(0) }).await.unwrap(), 1);
    // BuildPaths of present paths: nothing to do.
    let q = BuildPaths {
        paths: vec![f.full(0).into()],
        mode: BuildMode::NORMAL,
        ..Default::default()
    };
    assert_eq!(c.call(&q).await.unwrap(), 1);
    assert_eq!(snapshot(&f), before, "lower dir or index changed");
}

/// Every entry under the lower dir and the state dir, recursively: path,
/// mode (file type and permission bits) and contents (a symlink: its
/// target; a directory: nothing, its entries follow). The index's `-shm`
/// is left out: readers rewrite it.
fn snapshot(f: &Fixture) -> Vec<(String, u32, Vec<u8>)> {
    fn walk(dir: &std::path::Path, out: &mut Vec<(String, u32, Vec<u8>)>) {
        use std::os::unix::fs::MetadataExt;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "sqlite-shm") {
                continue; // shared-memory index of the WAL, rewritten by readers
            }
            let m = std::fs::symlink_metadata(&p).unwrap();
            let content = if m.file_type().is_symlink() {
                std::fs::read_link(&p).unwrap().into_os_string().into_encoded_bytes()
            } else if m.is_dir() {
                Vec::new()
            } else {
                std::fs::read(&p).unwrap()
            };
            out.push((p.display().to_string(), m.mode(), content));
            if m.is_dir() {
                walk(&p, out);
            }
        }
    }
    let mut v = Vec::new();
    for d in [&f.lower, &f.state] {
        walk(d, &mut v);
    }
    v.sort();
    // The fixture has directories with files in them: the walk went down.
    assert!(v
        .iter()
        .any(|(p, _, _)| p.matches('/').count() > f.lower.display().to_string().matches('/').count() + 1));
    v
}

/// Framed data as write ops send it: one 5-byte frame, then the terminator.
fn framed(a: &mut WireBuf) {
    a.u64(5);
    a.0.extend_from_slice(b"hello");
    a.u64(0);
}

/// One test per op that would write or build: refused with an error naming
/// the op (and, for a write, saying the store is read-only), its payload
/// drained so the connection answers the next request.
macro_rules! refused_op {
    ($test:ident, read_only: $ro:expr, |$p:ident| $req:expr) => {
        async fn $test(lookups: Lookups) {
            let (f, mut c) = setup(lookups).await;
            let $p = f.full(0);
            let e = refused_then_usable(&mut c, &$req, &$p).await;
            if $ro {
                assert!(e.contains("read-only"), "{e}");
            }
        }
    };
}

refused_op!(add_to_store_is_refused, read_only: true, |p| AddToStore {
    name: "name".into(),
    rest: {
        let mut a = WireBuf::default();
        a.str("text:sha256").strings([p.as_str()]).u64(0);
        framed(&mut a);
        a.0
    },
});
refused_op!(add_text_to_store_is_refused, read_only: true, |p| AddTextToStore {
    name: "x".into(),
    rest: {
        let mut a = WireBuf::default();
        a.str("some text").strings(std::iter::empty());
        a.0
    },
});
refused_op!(add_to_store_nar_is_refused, read_only: true, |p| AddToStoreNar {
    path: p.clone(),
    rest: {
        let mut a = WireBuf::default();
        a.str("")
            .str(&"0".repeat(64))
            .strings(std::iter::empty())
            .u64(0)
            .u64(8)
            .u64(0)
            .strings(std::iter::empty())
            .str("")
            .u64(0)
            .u64(0);
        framed(&mut a);
        a.0
    },
});
refused_op!(add_multiple_to_store_is_refused, read_only: true, |p| AddMultipleToStore {
    rest: {
        let mut a = WireBuf::default();
        a.u64(0).u64(0);
        framed(&mut a);
        a.0
    },
});
refused_op!(add_build_log_is_refused, read_only: true, |p| AddBuildLog {
    path: p.clone(),
    rest: {
        let mut a = WireBuf::default();
        framed(&mut a);
        a.0
    },
});
refused_op!(add_signatures_is_refused, read_only: true, |p| AddSignatures {
    path: p.clone(),
    rest: {
        let mut a = WireBuf::default();
        a.strings(["cache:sig"]);
        a.0
    },
});
refused_op!(build_paths_of_an_absent_output_is_refused, read_only: true, |p| BuildPaths {
    paths: vec![format!("/nix/store/{}-x.drv!out", "d".repeat(32)).into()],
    mode: BuildMode::NORMAL,
    ..Default::default()
});
refused_op!(build_paths_with_results_is_refused, read_only: true, |p| BuildPathsWithResults {
    paths: vec![format!("/nix/store/{}-x.drv!out", "d".repeat(32)).into()],
    mode: BuildMode::NORMAL,
    ..Default::default()
});
refused_op!(build_derivation_is_refused, read_only: true, |p| BuildDerivation {
    path: format!("/nix/store/{}-x.drv", "d".repeat(32)),
    rest: {
        let mut a = WireBuf::default();
        a.u64(1).str("out").str(&p).str("").str("");
        a.strings(std::iter::empty())
            .str("x86_64-linux")
            .str("/bin/sh")
            .strings(["-c", "true"]);
        a.u64(1).str("out").str(&p);
        a.u64(0);
        a.0
    },
});
refused_op!(ensure_path_of_an_absent_path_is_refused, read_only: false, |p| EnsurePath {
    path: format!("/nix/store/{}-absent", "d".repeat(32)),
});
refused_op!(collect_garbage_is_refused, read_only: true, |p| CollectGarbage {
    rest: {
        let mut a = WireBuf::default();
        a.u64(2)
            .strings(std::iter::empty())
            .u64(0)
            .u64(u64::MAX)
            .u64(0)
            .u64(0)
            .u64(0);
        a.0
    },
});
refused_op!(register_drv_output_is_refused, read_only: true, |p| RegisterDrvOutput {
    id: "{\"id\":\"x\"}".into(),
    rest: Vec::new(),
});
refused_op!(verify_store_with_repair_is_refused, read_only: false, |p| VerifyStore {
    check_contents: true,
    repair: true,
});

/// The old AddToStore (before 1.25) sends an unframed NAR: it is parsed to its end.
async fn old_add_to_store_nar_is_drained(lookups: Lookups) {
    let f = Fixture::with_lookups(lookups);
    f.import_all();
    f.serve().await;
    let mut c = Client::connect(&f.socket, 24).await.unwrap();
    let mut nar = NarWriter::new(Vec::new());
    nar.write_nar(&f.lower.join(f.entries[2].path.base_name())).unwrap();
    let mut a = WireBuf::default();
    a.u64(1).u64(1).str("sha256");
    a.0.extend_from_slice(&nar.into_inner());
    let q = AddToStore {
        name: "x".into(),
        rest: a.0,
    };
    let e = daemon_err(c.call(&q).await);
    assert!(e.contains("read-only"));
    assert!(c.is_valid_path(&f.full(0)).await.unwrap());
}

async fn hostile_input_closes_only_that_connection(lookups: Lookups) {
    let f = Fixture::with_lookups(lookups);
    f.import_all();
    let server = f.serve().await;
    let mut good = Client::connect(&f.socket, 38).await.unwrap();

    // Wrong magic: closed without a reply.
    let mut s = tokio::net::UnixStream::connect(&f.socket).await.unwrap();
    s.write_all(&0xdeadbeefu64.to_le_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    assert!(buf.is_empty());

    // Huge length prefix in a request: error, then closed.
    let mut c = Client::connect(&f.socket, 38).await.unwrap();
    let mut a = WireBuf::default();
    a.u64(1).u64(u64::MAX);
    c.w.write_all(&a.0).await.unwrap();
    let e = daemon_err(c.stderr().await);
    assert!(e.contains("longer than the limit"), "{e}");
    assert!(c.r.u64().await.is_err(), "connection must be closed");

    // Unknown op: error, then closed.
    let mut c = Client::connect(&f.socket, 38).await.unwrap();
    let e = daemon_err(c.call_raw(999, &WireBuf::default()).await);
    assert!(e.contains("unknown worker op 999"), "{e}");
    assert!(c.r.u64().await.is_err());

    // Invalid UTF-8 and paths outside the store or with '..': error, connection usable.
    let mut c = Client::connect(&f.socket, 38).await.unwrap();
    for bad in [
        &b"/nix/store/\xff\xfe"[..],
        b"/etc/passwd",
        b"/nix/store/../../etc/passwd",
    ] {
        let mut a = WireBuf::default();
        a.bytes(bad);
        // Raw bytes: a request type holds only valid UTF-8.
        let e = daemon_err(c.call_raw(Op::QueryPathInfo as u64, &a).await);
        assert!(e.contains("QueryPathInfo"), "{e}");
        assert!(c.is_valid_path(&f.full(0)).await.unwrap());
    }

    // A truncated handshake ends only that connection.
    let mut s = tokio::net::UnixStream::connect(&f.socket).await.unwrap();
    s.write_all(&[0x63, 0x78]).await.unwrap();
    drop(s);

    assert!(
        good.is_valid_path(&f.full(0)).await.unwrap(),
        "other connections unaffected"
    );
    assert!(server.stats.requests.load(std::sync::atomic::Ordering::Relaxed) > 0);
}

async fn serve_sees_an_import_without_restart(lookups: Lookups) {
    let mut f = Fixture::with_lookups(lookups);
    f.imports_while_serving();
    // Index only the first layer, start serving, then import the rest.
    let lower = snix_lower_store_types::lower::LowerDir::open(&f.lower).unwrap();
    snix_lower_store_index::import::import(&f.state, &f.sd, &lower, f.entries[..2].to_vec(), Default::default())
        .unwrap();
    f.serve().await;
    let mut c = Client::connect(&f.socket, 38).await.unwrap();
    let referrers = |path: String| QueryReferrers { path };
    assert!(!c.is_valid_path(&f.full(3)).await.unwrap());
    assert!(c.query_path_info(&f.full(3)).await.unwrap().is_none());
    assert!(c.call(&referrers(f.full(0))).await.unwrap().is_empty());
    f.import_all();
    // Readers keep a snapshot for at most READ_SNAPSHOT_MAX_AGE.
    tokio::time::sleep(snix_lower_store_index::READ_SNAPSHOT_MAX_AGE + std::time::Duration::from_millis(20)).await;
    async fn sees_all(f: &Fixture, c: &mut Client) {
        assert!(c.is_valid_path(&f.full(3)).await.unwrap());
        let (top, bottom) = (f.full(3), f.full(0));
        let valid = c.query_valid_paths(&[&top, &bottom]).await.unwrap();
        assert_eq!(valid.len(), 2, "{valid:?}");
        assert!(c.query_path_info(&f.full(3)).await.unwrap().is_some());
        let mut layer1 = vec![f.full(2), f.full(3)];
        layer1.sort();
        assert_eq!(c.call(&QueryReferrers { path: f.full(0) }).await.unwrap(), layer1);
    }
    sees_all(&f, &mut c).await;
    if lookups == Lookups::KeyDirectory {
        // The directory of the first layer was not used for the new
        // snapshot (SQLite answered), and one of the whole index replaces it.
        let st = f.key_directory_stats();
        assert!(st.from_sqlite >= 1, "{st}");
        f.await_key_directory();
        let st = f.key_directory_stats();
        assert_eq!((st.builds, st.paths), (2, Some(f.entries.len())), "{st}");
        sees_all(&f, &mut c).await;
    }
}

/// The real daemon binary serving `f` in its lookup mode, its stderr in
/// `log`, its sd_notify messages on `notify`; killed on drop.
struct RealDaemon {
    child: std::process::Child,
    log: std::path::PathBuf,
    notify: std::os::unix::net::UnixDatagram,
    /// The last STATUS= the daemon sent.
    status: String,
}

/// The key directory's counts in a STATUS line: reader snapshots answered
/// from it and from SQLite.
fn snapshot_counts(status: &str) -> Option<(u64, u64)> {
    let (_, rest) = status.split_once("; ")?.1.split_once("; ")?;
    let (from_it, rest) = rest.split_once(" reader snapshots answered from it, ")?;
    let from_sqlite = rest.strip_suffix(" from SQLite")?;
    Some((from_it.parse().ok()?, from_sqlite.parse().ok()?))
}

impl RealDaemon {
    /// Starts it and waits for its socket, and in key directory mode for a
    /// STATUS saying the directory holds every path, before any request.
    async fn start(f: &Fixture) -> RealDaemon {
        let log = f.dir.path().join("daemon.log");
        let notify_path = f.dir.path().join("notify");
        let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
        notify
            .set_read_timeout(Some(std::time::Duration::from_millis(200)))
            .unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_snix-lower-store"));
        cmd.args(["--log-level", "info", "--log-target", "stderr", "serve", "--listen"])
            .arg(&f.socket)
            .arg("--lower-dir")
            .arg(&f.lower)
            .arg("--state-dir")
            .arg(&f.state)
            .env_remove("RUST_LOG")
            .env_remove("JOURNAL_STREAM")
            .env("NOTIFY_SOCKET", &notify_path)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if f.lookups == Lookups::Sqlite {
            cmd.arg("--no-key-directory");
        }
        let child = cmd.spawn().unwrap();
        let mut d = RealDaemon {
            child,
            log,
            notify,
            status: String::new(),
        };
        let t0 = std::time::Instant::now();
        while tokio::net::UnixStream::connect(&f.socket).await.is_err() {
            if let Some(st) = d.child.try_wait().unwrap() {
                panic!("the daemon exited ({st}) before listening: {}", d.log_text());
            }
            assert!(t0.elapsed().as_secs() < 60, "no socket after 60 s: {}", d.log_text());
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        if f.lookups == Lookups::KeyDirectory {
            let built = format!("key directory: {} paths", f.entries.len());
            d.status_where(|s| s.contains(&built), &built);
        }
        d
    }

    /// Reads sd_notify messages until a STATUS= satisfies `want` (at most
    /// 60 s; the daemon refreshes it every 2 s) and returns it.
    fn status_where(&mut self, want: impl Fn(&str) -> bool, what: &str) -> String {
        let t0 = std::time::Instant::now();
        let mut buf = vec![0u8; 4096];
        while !want(&self.status) {
            assert!(
                t0.elapsed().as_secs() < 60,
                "no STATUS= with {what} after 60 s; last: {:?}; log: {}",
                self.status,
                self.log_text()
            );
            if let Ok(n) = self.notify.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]);
                if let Some(s) = msg.lines().find_map(|l| l.strip_prefix("STATUS=")) {
                    self.status = s.to_owned();
                }
            }
        }
        self.status.clone()
    }

    /// The lookup mode asked for is the one that answered: with the key
    /// directory, STATUS counts reader snapshots answered from it and none
    /// from SQLite; without it, STATUS says it is off.
    fn check_lookups(&mut self, lookups: Lookups) {
        match lookups {
            Lookups::KeyDirectory => {
                let s = self.status_where(
                    |s| snapshot_counts(s).is_some_and(|(from_it, _)| from_it > 0),
                    "snapshots answered from the key directory",
                );
                assert_eq!(snapshot_counts(&s).map(|c| c.1), Some(0), "SQLite answered: {s}");
            }
            Lookups::Sqlite => {
                let s = self.status_where(|s| !s.is_empty(), "any status");
                assert!(s.ends_with("; key directory off"), "{s}");
            }
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RealDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `base` with the bytes from `at` on replaced by multi-byte `c` (the same
/// byte length, unless `c` runs past the end).
fn with_char_at(base: &str, at: usize, c: char) -> String {
    let mut b = base.as_bytes().to_vec();
    let mut enc = [0u8; 4];
    let cb = c.encode_utf8(&mut enc).as_bytes();
    b.splice(at..(at + cb.len()).min(b.len()), cb.iter().copied());
    String::from_utf8(b).unwrap()
}

/// Issue 11: a multi-byte character straddling byte 32 of the base name made
/// `StorePath::from_base_name` panic (the connection died with EOF). Every
/// offset 0..=40, three characters of 2, 3 and 4 bytes, three ops: each gets
/// STDERR_ERROR naming the op and the path (escaped), the next request on the
/// same connection is answered, and the daemon logged no panic.
async fn multibyte_store_paths_are_errors_and_the_connection_stays_usable(lookups: Lookups) {
    use snix_lower_store::panics::PANIC_MARKER;
    use snix_lower_store_types::path::shown;
    let f = Fixture::with_lookups(lookups);
    f.import_all();
    let mut daemon = RealDaemon::start(&f).await;
    let mut c = Client::connect(&f.socket, 38).await.unwrap();
    let good = f.full(0);
    let base = format!("00bgd045z0d4icpbc2yyz4gx48ak44la-{}", "x".repeat(20));
    let mut inputs = vec![format!("/nix/store/{}Б-x", "a".repeat(31))];
    for ch in ['Б', '€', '😀'] {
        for at in 0..=40 {
            inputs.push(format!("/nix/store/{}", with_char_at(&base, at, ch)));
        }
    }
    for input in &inputs {
        for (op, m) in [
            ("IsValidPath", daemon_err(c.is_valid_path(input).await)),
            ("QueryPathInfo", daemon_err(c.query_path_info(input).await)),
            (
                "QueryValidPaths",
                daemon_err(c.query_valid_paths(&[&good, input]).await),
            ),
        ] {
            assert!(m.starts_with(op), "{op} {input:?}: {m}");
            assert!(m.contains(&shown(input)) && m.contains("\\u{"), "{op} {input:?}: {m}");
            assert!(m.contains("is not a valid store path"), "{op} {input:?}: {m}");
            // The next request on the same connection is answered.
            assert!(c.is_valid_path(&good).await.unwrap(), "after {op} {input:?}");
        }
    }
    let log = daemon.log_text();
    assert!(!log.contains(PANIC_MARKER) && !log.contains("panicked"), "{log}");
    daemon.check_lookups(lookups);
}

/// The crash input in every other op that takes store paths: STDERR_ERROR
/// naming the op and the escaped path, then the connection answers again.
async fn the_crash_input_in_every_path_op_is_an_error(lookups: Lookups) {
    use snix_lower_store_types::path::shown;
    let (f, mut c) = setup(lookups).await;
    let good = f.full(0);
    let crash = format!("/nix/store/{}Б-x", "a".repeat(31));
    let c = &mut c;
    let p = || crash.clone();
    let mut errors = vec![
        refused_then_usable(c, &HasSubstitutes { path: p() }, &good).await,
        refused_then_usable(c, &QueryPathHash { path: p() }, &good).await,
        refused_then_usable(c, &QueryReferences { path: p() }, &good).await,
        refused_then_usable(c, &QueryReferrers { path: p() }, &good).await,
        refused_then_usable(c, &EnsurePath { path: p() }, &good).await,
        refused_then_usable(c, &AddTempRoot { path: p() }, &good).await,
        refused_then_usable(c, &QueryDeriver { path: p() }, &good).await,
        refused_then_usable(c, &QuerySubstitutablePathInfo { path: p() }, &good).await,
        refused_then_usable(c, &QueryDerivationOutputs { path: p() }, &good).await,
        refused_then_usable(c, &QueryDerivationOutputNames { path: p() }, &good).await,
        refused_then_usable(c, &QueryValidDerivers { path: p() }, &good).await,
        refused_then_usable(c, &NarFromPath { path: p() }, &good).await,
        refused_then_usable(c, &QueryDerivationOutputMap { path: p() }, &good).await,
    ];
    let q = QuerySubstitutablePaths { paths: vec![p()] };
    errors.push(refused_then_usable(c, &q, &good).await);
    let q = QueryMissing {
        targets: vec![format!("{crash}!out").into()],
        ..Default::default()
    };
    errors.push(refused_then_usable(c, &q, &good).await);
    let q = BuildPaths {
        paths: vec![p().into()],
        mode: BuildMode::NORMAL,
        ..Default::default()
    };
    errors.push(refused_then_usable(c, &q, &good).await);
    let q = AddPermRoot {
        path: p(),
        gc_root: "/tmp/root".into(),
    };
    errors.push(refused_then_usable(c, &q, &good).await);
    for m in errors {
        assert!(m.contains(&shown(&crash)), "{m}");
    }
}

in_both_lookup_modes! {
    #[tokio::test(flavor = "multi_thread")]
    handshake_reports_version_and_trust,
    older_protocols_negotiate_and_too_old_is_a_clear_error,
    validity_and_path_info,
    referrers_derivers_and_hash_part,
    missing_substitutes_and_realisations,
    a_bare_drv_below_1_30_asks_for_all_its_outputs,
    query_realisation_in_both_layouts,
    nar_from_path_matches_the_lower_dir,
    gc_and_root_ops_write_nothing,
    old_add_to_store_nar_is_drained,
    hostile_input_closes_only_that_connection,
    serve_sees_an_import_without_restart,
    multibyte_store_paths_are_errors_and_the_connection_stays_usable,
    the_crash_input_in_every_path_op_is_an_error,
    add_to_store_is_refused,
    add_text_to_store_is_refused,
    add_to_store_nar_is_refused,
    add_multiple_to_store_is_refused,
    add_build_log_is_refused,
    add_signatures_is_refused,
    build_paths_of_an_absent_output_is_refused,
    build_paths_with_results_is_refused,
    build_derivation_is_refused,
    ensure_path_of_an_absent_path_is_refused,
    collect_garbage_is_refused,
    register_drv_output_is_refused,
    verify_store_with_repair_is_refused;
}
