//! Shared fixture: a generated lower store, indexed and served on a socket.
//!
//! Lookup modes ([`Lookups`]): `serve` answers point lookups from an
//! in-memory key directory by default and from SQLite alone with
//! `--no-key-directory`. A fixture serves in one of them; with the key
//! directory, `serve` returns only once the directory is built and answers
//! a reader. A test that chose its mode ([`Fixture::with_lookups`], and
//! [`in_both_lookup_modes!`] which runs a test body once per mode) is
//! checked when the fixture is dropped: with the key directory, no reader
//! snapshot after that point answered from SQLite (unless the test said an
//! import happens while serving); without it, no directory exists.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use snix_lower_store::server::ops::LowerStore;
use snix_lower_store::server::Server;
use snix_lower_store_index::import::{self, ImportOptions};
use snix_lower_store_index::{KeyDirStats, PathInfoIndex};
use snix_lower_store_protocol::wire::Limits;
use snix_lower_store_types::lower::LowerDir;
use snix_lower_store_types::path_info::PathInfo;
use snix_lower_store_types::StoreDir;

/// How the served index answers point lookups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookups {
    /// `serve`'s default: the in-memory key directory, built and answering
    /// before the first client connects.
    KeyDirectory,
    /// `serve --no-key-directory`: SQLite answers every lookup.
    Sqlite,
}

/// How long a fixture waits for its key directory.
const KEY_DIRECTORY_WAIT: Duration = Duration::from_secs(60);

/// Runs each listed test body (an `async fn(Lookups)`) once per lookup
/// mode, as `key_directory::NAME` and `sqlite::NAME`, with the test
/// attribute given before each group.
#[allow(unused_macros)]
macro_rules! in_both_lookup_modes {
    ($(#[$attr:meta] $($test:ident),+ $(,)?);+ $(;)?) => {
        mod key_directory {
            $($(#[$attr] async fn $test() { super::$test(super::common::Lookups::KeyDirectory).await })+)+
        }
        mod sqlite {
            $($(#[$attr] async fn $test() { super::$test(super::common::Lookups::Sqlite).await })+)+
        }
    };
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub lower: PathBuf,
    pub state: PathBuf,
    pub socket: PathBuf,
    pub sd: StoreDir,
    pub entries: Vec<PathInfo>,
    pub lookups: Lookups,
    /// Whether the drop check runs (the test chose its mode).
    checked: bool,
    /// Whether an import while serving lets SQLite answer stale snapshots.
    stale_ok: bool,
    /// Each index served, and its SQLite-answered snapshots when serving began.
    served: Mutex<Vec<(Arc<PathInfoIndex>, u64)>>,
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let lower = dir.path().join("lower");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        let sd = StoreDir::new("/nix/store").unwrap();
        let entries = snix_lower_store_testkit::demo::generate(&lower, &sd, 3, 2).unwrap();
        let socket = dir.path().join("sock");
        Fixture {
            dir,
            lower,
            state,
            socket,
            sd,
            entries,
            lookups: Lookups::KeyDirectory,
            checked: false,
            stale_ok: false,
            served: Mutex::new(Vec::new()),
        }
    }

    /// A fixture serving in `lookups` mode, checked when dropped.
    pub fn with_lookups(lookups: Lookups) -> Fixture {
        let mut f = Fixture::new();
        f.lookups = lookups;
        f.checked = true;
        f
    }

    /// This test imports while serving: SQLite answers the snapshots the
    /// directory does not describe yet.
    pub fn imports_while_serving(&mut self) {
        self.stale_ok = true;
    }

    /// The key directory counters of the index served last.
    pub fn key_directory_stats(&self) -> KeyDirStats {
        let served = self.served.lock().unwrap();
        served.last().expect("nothing served yet").0.key_directory_stats()
    }

    /// Waits until the served index answers from a key directory of the
    /// index as it is now (after an import while serving).
    pub fn await_key_directory(&self) {
        let served = self.served.lock().unwrap();
        let idx = &served.last().expect("nothing served yet").0;
        idx.await_key_directory(KEY_DIRECTORY_WAIT).unwrap();
    }

    pub fn import_all(&self) {
        let lower = LowerDir::open(&self.lower).unwrap();
        import::import(
            &self.state,
            &self.sd,
            &lower,
            self.entries.clone(),
            ImportOptions {
                check_content: true,
                ..Default::default()
            },
        )
        .unwrap();
    }

    pub fn full(&self, i: usize) -> String {
        self.sd.display(&self.entries[i].path)
    }

    /// Start serving on `self.socket` in the background.
    pub async fn serve(&self) -> Arc<Server> {
        self.serve_with(Default::default()).await
    }

    /// Same, with connection limits.
    pub async fn serve_with(&self, conn_limits: snix_lower_store::server::ConnLimits) -> Arc<Server> {
        let index = Arc::new(PathInfoIndex::open(&self.state, "/nix/store").unwrap());
        if self.lookups == Lookups::KeyDirectory {
            index.start_key_directory();
            index.await_key_directory(KEY_DIRECTORY_WAIT).unwrap();
        }
        let from_sqlite = index.key_directory_stats().from_sqlite;
        self.served.lock().unwrap().push((index.clone(), from_sqlite));
        let backend: Arc<dyn snix_lower_store::backend::Backend> = index;
        let store = LowerStore {
            backend,
            lower: LowerDir::open(&self.lower).unwrap(),
            store_dir: self.sd.clone(),
        };
        let server = Arc::new(Server {
            store,
            trusted_users: vec!["root".into()],
            limits: Limits {
                max_string: 4096,
                max_list: 1000,
            },
            conn_limits,
            daemon_version: snix_lower_store::daemon_version(),
            stats: Default::default(),
        });
        let listener = tokio::net::UnixListener::bind(&self.socket).unwrap();
        tokio::spawn(server.clone().run(vec![listener], None, std::future::pending()));
        server
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if !self.checked || std::thread::panicking() {
            return;
        }
        for (idx, from_sqlite) in self.served.get_mut().unwrap().iter() {
            let st = idx.key_directory_stats();
            match self.lookups {
                Lookups::KeyDirectory => {
                    assert!(st.builds >= 1 && st.from_directory >= 1, "key directory unused: {st}");
                    assert!(
                        self.stale_ok || st.from_sqlite == *from_sqlite,
                        "with the key directory in use, {} reader snapshot(s) answered from SQLite: {st}",
                        st.from_sqlite - from_sqlite
                    );
                }
                Lookups::Sqlite => assert_eq!(st, KeyDirStats::default(), "a key directory without one asked for"),
            }
        }
    }
}

/// The vectors real Nix made (crates/types/tests/data/ca-proof-vectors.json) as a
/// lower dir with their contents and a `nix-store --dump-db` registration.
pub fn nix_made_lower(root: &std::path::Path) -> (serde_json::Value, String) {
    let doc: serde_json::Value =
        serde_json::from_str(include_str!("../../crates/types/tests/data/ca-proof-vectors.json")).unwrap();
    let mut reg = String::new();
    for e in doc["entries"].as_array().unwrap() {
        let path = e["path"].as_str().unwrap();
        let obj = root.join(path.rsplit('/').next().unwrap());
        if let Some(text) = e["file"].as_str() {
            std::fs::write(&obj, text).unwrap();
        }
        for (rel, what) in e["dir"].as_object().into_iter().flatten() {
            let at = obj.join(rel);
            std::fs::create_dir_all(at.parent().unwrap()).unwrap();
            match what.as_str().unwrap().strip_prefix("->") {
                Some(target) => std::os::unix::fs::symlink(target, &at).unwrap(),
                None => std::fs::write(&at, what.as_str().unwrap()).unwrap(),
            }
        }
        let refs = e["references"].as_array().unwrap();
        reg.push_str(&format!(
            "{path}\n{}\n{}\n\n{}\n",
            &e["narHash"].as_str().unwrap()["sha256:".len()..],
            e["narSize"],
            refs.len()
        ));
        for r in refs {
            reg.push_str(r.as_str().unwrap());
            reg.push('\n');
        }
    }
    (doc, reg)
}

/// Writes a Nix database at `db` with Nix's `ValidPaths` and `Refs` schema
/// holding `paths` as `nix-store` records them (`hash` as `sha256:<base16>`,
/// registration time 1, not ultimate, no signatures; deriver and `ca` as the
/// entries say), references as row ids in the entries' order. Every
/// reference must be one of `paths`.
pub fn write_nix_db(db: &std::path::Path, sd: &StoreDir, paths: &[snix_lower_store_types::path_info::PathInfo]) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute_batch(
        "CREATE TABLE ValidPaths (id integer primary key autoincrement not null, path text unique not null,
           hash text not null, registrationTime integer not null, deriver text, narSize integer,
           ultimate integer, sigs text, ca text);
         CREATE TABLE Refs (referrer integer not null, reference integer not null, primary key (referrer, reference));",
    )
    .unwrap();
    for (i, e) in paths.iter().enumerate() {
        c.execute(
            "INSERT INTO ValidPaths (id, path, hash, registrationTime, deriver, narSize, ultimate, sigs, ca) VALUES (?1, ?2, ?3, 1, ?4, ?5, 0, '', ?6)",
            rusqlite::params![i as i64 + 1, sd.display(&e.path), format!("sha256:{}", e.nar_hash.to_base16()), e.deriver.as_ref().map(|d| sd.display(d)), e.nar_size as i64, e.ca.as_ref().map(|c| c.render())],
        )
        .unwrap();
    }
    for (i, e) in paths.iter().enumerate() {
        for r in &e.references {
            let j = paths.iter().position(|x| &x.path == r).unwrap();
            c.execute("INSERT INTO Refs VALUES (?1, ?2)", [i as i64 + 1, j as i64 + 1])
                .unwrap();
        }
    }
}
