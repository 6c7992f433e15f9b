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
