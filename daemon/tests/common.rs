//! Shared fixture: a generated lower store, indexed and served on a socket.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use snix_lower_store::index::import::{self, ImportOptions, NewPath};
use snix_lower_store::index::PathInfoIndex;
use snix_lower_store::lower::LowerDir;
use snix_lower_store::protocol::wire::Limits;
use snix_lower_store::server::ops::LowerStore;
use snix_lower_store::server::Server;
use snix_lower_store::store::StoreDir;

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub lower: PathBuf,
    pub state: PathBuf,
    pub socket: PathBuf,
    pub sd: StoreDir,
    pub entries: Vec<NewPath>,
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
        let entries = snix_lower_store::demo::generate(&lower, &sd, 3, 2).unwrap();
        let socket = dir.path().join("sock");
        Fixture {
            dir,
            lower,
            state,
            socket,
            sd,
            entries,
        }
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
        let store = LowerStore {
            backend: snix_lower_store::backend::index(PathInfoIndex::open(&self.state, "/nix/store").unwrap()),
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

/// The vectors real Nix made (daemon/tests/data/ca-proof-vectors.json) as a
/// lower dir with their contents and a `nix-store --dump-db` registration.
pub fn nix_made_lower(root: &std::path::Path) -> (serde_json::Value, String) {
    let doc: serde_json::Value = serde_json::from_str(include_str!("data/ca-proof-vectors.json")).unwrap();
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
