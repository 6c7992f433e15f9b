//! Unit tests of reconcile planning, ordering, the in-place update and the
//! settled file, over small upper databases with Nix's `schema.sql` tables
//! (`ValidPaths`, `Refs` with its foreign keys and the self-reference
//! trigger) and a real upper layer directory.

use super::plan::{self, referrers_first, UpperDb};
use super::*;
use rusqlite::Connection;
use snix_lower_store_types::content_address::ContentAddress;
use snix_lower_store_types::hash::nix32_encode;
use snix_lower_store_types::path_info::{PathInfo, Signature};
use snix_lower_store_types::{NarHash, StorePath};
use std::collections::{BTreeSet, HashMap};

/// Nix's schema.sql, the parts reconcile reads and writes.
const NIX_SCHEMA: &str = "
create table if not exists ValidPaths (
    id integer primary key autoincrement not null, path text unique not null,
    hash text not null, registrationTime integer not null, deriver text,
    narSize integer, ultimate integer, sigs text, ca text);
create table if not exists Refs (
    referrer integer not null, reference integer not null,
    primary key (referrer, reference),
    foreign key (referrer) references ValidPaths(id) on delete cascade,
    foreign key (reference) references ValidPaths(id) on delete restrict);
create index if not exists IndexReference on Refs(reference);
create trigger if not exists DeleteSelfRefs before delete on ValidPaths
  begin delete from Refs where referrer = old.id and reference = old.id; end;
";

fn base(c: char, name: &str) -> String {
    format!("{}-{name}", c.to_string().repeat(32))
}

fn full(c: char, name: &str) -> String {
    format!("/nix/store/{}", base(c, name))
}

fn hash(n: u8) -> NarHash {
    NarHash::parse(&format!("sha256:{}", format!("{n:02x}").repeat(32))).unwrap()
}

/// A path info as the new lower index would answer it.
fn info(c: char, name: &str, h: u8, refs: &[(char, &str)]) -> PathInfo {
    let mut references: Vec<StorePath> = refs
        .iter()
        .map(|(c, n)| StorePath::from_base_name(&base(*c, n)).unwrap())
        .collect();
    references.sort();
    PathInfo {
        references,
        registration_time: 1,
        sigs: vec![Signature::parse("k:c2ln").unwrap()],
        ..PathInfo::new(
            StorePath::from_base_name(&base(c, name)).unwrap(),
            hash(h),
            1000 + h as u64,
        )
    }
}

/// A temporary store: Nix's database, an upper layer dir, a lower index.
struct Fx {
    dir: tempfile::TempDir,
    lower: HashMap<String, PathInfo>,
}

impl Fx {
    fn new() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("upper")).unwrap();
        let c = Connection::open(dir.path().join("db.sqlite")).unwrap();
        c.execute_batch(NIX_SCHEMA).unwrap();
        Fx {
            dir,
            lower: HashMap::new(),
        }
    }
    fn db(&self) -> std::path::PathBuf {
        self.dir.path().join("db.sqlite")
    }
    fn upper(&self) -> std::path::PathBuf {
        self.dir.path().join("upper")
    }
    /// Registers `i` in the upper database as Nix's `addValidPath` does.
    fn register(&self, i: &PathInfo) {
        let c = Connection::open(self.db()).unwrap();
        c.execute_batch("pragma foreign_keys = 1").unwrap();
        c.execute(
            "insert into ValidPaths (path, hash, registrationTime, narSize, sigs, ca) values (?, ?, 1, ?, ?, ?)",
            rusqlite::params![
                format!("/nix/store/{}", i.path.base_name()),
                format!("sha256:{}", i.nar_hash.to_base16()),
                i.nar_size as i64,
                snix_lower_store_types::path_info::join_sigs(&i.sigs),
                i.ca.as_ref().map(|c| c.render())
            ],
        )
        .unwrap();
        for r in &i.references {
            c.execute(
                "insert into Refs (referrer, reference) select a.id, b.id from ValidPaths a, ValidPaths b \
                 where a.path = ? and b.path = ?",
                [
                    format!("/nix/store/{}", i.path.base_name()),
                    format!("/nix/store/{}", r.base_name()),
                ],
            )
            .unwrap();
        }
    }
    fn in_lower(&mut self, i: &PathInfo) {
        self.lower.insert(i.path.base_name().to_string(), i.clone());
    }
    fn in_upper_layer(&self, i: &PathInfo) {
        std::fs::write(self.upper().join(i.path.base_name()), "x").unwrap();
    }
    fn read(&self) -> UpperDb {
        plan::read_upper_db(&self.db()).unwrap()
    }
    fn plan(&self) -> plan::Plan {
        let lookup = |p: &StorePath| Ok(self.lower.get(p.base_name()).cloned());
        plan::plan(&self.read(), "/nix/store", &self.upper(), &lookup).unwrap()
    }
}

/// Lower A: lib <- app <- top, and keep; built on top: mine -> top.
/// Lower B: lib (new narHash), keep; app and top gone.
fn rotated() -> Fx {
    let mut fx = Fx::new();
    let lib = info('a', "lib", 1, &[('a', "lib")]);
    let app = info('b', "app", 2, &[('a', "lib")]);
    let top = info('c', "top", 3, &[('b', "app")]);
    let keep = info('d', "keep", 4, &[]);
    let mine = info('f', "mine", 5, &[('c', "top")]);
    for i in [&lib, &app, &top, &keep, &mine] {
        fx.register(i);
    }
    fx.in_upper_layer(&mine);
    fx.in_lower(&info('a', "lib", 9, &[('a', "lib")]));
    fx.in_lower(&keep);
    fx
}

#[test]
fn reconcile_plan_names_lost_changed_and_broken() {
    let fx = rotated();
    let p = fx.plan();
    assert_eq!(p.checked, 5);
    let lost: Vec<&String> = p.lost.keys().collect();
    assert_eq!(lost, [&full('b', "app"), &full('c', "top")]);
    assert_eq!(p.changed.len(), 1, "{:?}", p.changed);
    assert_eq!(p.changed[0].path, full('a', "lib"));
    assert_eq!(p.changed[0].fields, ["narHash", "narSize"]);
    assert!(p.changed[0].referenced, "app refers to lib");
    assert_eq!(
        p.broken,
        [plan::Broken {
            path: full('f', "mine"),
            in_upper: true,
            needs: vec![full('b', "app"), full('c', "top")],
        }]
    );
}

#[test]
fn reconcile_plan_is_empty_for_a_lower_that_only_grew() {
    let mut fx = rotated();
    fx.in_lower(&info('a', "lib", 1, &[('a', "lib")]));
    fx.in_lower(&info('b', "app", 2, &[('a', "lib")]));
    fx.in_lower(&info('c', "top", 3, &[('b', "app")]));
    fx.in_lower(&info('g', "extra", 7, &[]));
    let p = fx.plan();
    assert!(p.is_empty(), "{p:?}");
}

#[test]
fn reconcile_plan_whiteout_is_no_upper_entry_and_refs_and_sigs_and_ca_count() {
    let mut fx = Fx::new();
    let lib = info('a', "lib", 1, &[]);
    let app = info('b', "app", 2, &[('a', "lib")]);
    fx.register(&lib);
    fx.register(&app);
    // app: same hash, other references in the new lower -> lost.
    fx.in_lower(&info('b', "app", 2, &[]));
    // lib: ca and sigs differ.
    let mut lib2 = lib.clone();
    lib2.ca = Some(ContentAddress::parse(&format!("fixed:r:sha256:{}", nix32_encode(&[1; 32]))).unwrap());
    lib2.sigs = vec![Signature::parse("k:b3RoZXI=").unwrap()];
    fx.in_lower(&lib2);
    // A whiteout for lib in the upper layer does not make it an upper path.
    let wh = fx.upper().join(lib.path.base_name());
    let (chr, mode) = (
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o600),
    );
    let made = rustix::fs::mknodat(rustix::fs::CWD, &wh, chr, mode, 0).is_ok();
    let p = fx.plan();
    assert_eq!(
        p.lost.get(&full('b', "app")),
        Some(&"in the new lower with other references")
    );
    assert_eq!(p.changed.len(), 1);
    assert_eq!(p.changed[0].fields, ["ca", "sigs"]);
    assert!(!p.changed[0].referenced || made, "{p:?}");
}

#[test]
fn reconcile_delete_order_puts_referrers_first_and_actions_follow_the_mode() {
    let fx = rotated();
    let db = fx.read();
    let p = fx.plan();
    let all: BTreeSet<String> = [full('b', "app"), full('c', "top"), full('f', "mine")].into();
    assert_eq!(
        referrers_first(&db, &all),
        [full('f', "mine"), full('c', "top"), full('b', "app")]
    );
    let a = act::actions(&db, &p, true);
    assert_eq!(a.delete, [full('f', "mine"), full('c', "top"), full('b', "app")]);
    assert_eq!(a.update.len(), 1);
    let a = act::actions(&db, &p, false);
    assert_eq!(a.delete, [full('c', "top"), full('b', "app")]);
}

#[test]
fn reconcile_update_writes_what_nix_updatepathinfo_writes() {
    let fx = rotated();
    let p = fx.plan();
    act::update_like_nix(&fx.db(), &p.changed).unwrap();
    let c = Connection::open(fx.db()).unwrap();
    let (h, n, u, s, ca): (String, Option<i64>, Option<i64>, Option<String>, Option<String>) = c
        .query_row(
            "select hash, narSize, ultimate, sigs, ca from ValidPaths where path = ?",
            [full('a', "lib")],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    assert_eq!(h, format!("sha256:{}", "09".repeat(32)));
    assert_eq!((n, u, s.as_deref(), ca), (Some(1009), None, Some("k:c2ln"), None));
    assert!(fx.plan().changed.is_empty());
}

#[test]
fn reconcile_refusal_names_broken_and_lost_paths_and_the_way_out() {
    let fx = rotated();
    let msg = refusal(&fx.plan(), "local-overlay://?x");
    assert!(
        msg.contains(&format!("broken (upper layer): {}", full('f', "mine"))),
        "{msg}"
    );
    assert!(msg.contains(&format!("needs lost: {}", full('c', "top"))), "{msg}");
    assert!(msg.contains("--on-broken invalidate"), "{msg}");
    assert!(msg.contains("nothing was changed"), "{msg}");
}

#[test]
fn reconcile_settled_file_round_trips_and_a_new_identity_does_not_match() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("sub/settled");
    assert!(!settled::matches(&f, "v1 aa").unwrap());
    settled::write(&f, "v1 aa").unwrap();
    assert!(settled::matches(&f, "v1 aa").unwrap());
    assert!(!settled::matches(&f, "v1 ab").unwrap());
    let text = std::fs::read_to_string(&f).unwrap();
    assert!(text.starts_with("# snix-lower-store reconcile"), "{text}");
    assert_eq!(
        std::fs::read_dir(dir.path().join("sub")).unwrap().count(),
        1,
        "no temporary left"
    );
}
