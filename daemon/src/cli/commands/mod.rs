//! Execution of the subcommands, one module each, and what several share:
//! the store dir, the served index, and the content-address proof options.
//!
//! Invariant: nothing here defines a flag (that is `flags.rs`); a command's
//! module gets its parsed args and returns the process's exit code.

use anyhow::{Context, Result};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use snix_lower_store::server::ops::LowerStore;
use snix_lower_store_index::PathInfoIndex;
use snix_lower_store_types::ca_proof::CaProofOptions;
use snix_lower_store_types::lower::LowerDir;
use snix_lower_store_types::StoreDir;

use super::flags::{CaProofArgs, Cmd, StoreArgs};

mod build_index;
mod demo;
mod import;
mod info;
mod list;
pub(crate) mod reconcile;
mod serve;
mod source;
mod store_url;
mod verify;

/// Runs one subcommand; an error is printed by `main` (exit 1).
pub(crate) fn run(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Serve(args) => serve::run(args),
        Cmd::Import(args) => import::run(args),
        Cmd::BuildIndex(args) => build_index::run(args),
        Cmd::Verify(args) => verify::run(args),
        Cmd::List(args) => list::run(args),
        Cmd::Info(args) => info::run(args),
        Cmd::StoreUrl(args) => store_url::run(args),
        Cmd::Reconcile(args) => Ok(reconcile::run(args)),
        Cmd::Demo(args) => demo::run(&args.dir, args.check),
    }
}

impl CaProofArgs {
    /// The proof options these flags ask for.
    pub(crate) fn options(&self) -> CaProofOptions {
        if self.no_ca_proof {
            CaProofOptions::OFF
        } else {
            CaProofOptions {
                from_nar_hash: true,
                max_file_size: self.ca_proof_max_file_size,
            }
        }
    }
}

/// The logical store dir of `--store-dir`.
pub(crate) fn store_dir(s: &str) -> Result<StoreDir> {
    StoreDir::new(s).map_err(anyhow::Error::msg)
}

/// An embedded index as a served backend, with the in-memory key directory
/// unless `--no-key-directory`.
pub(crate) fn served_index(index: PathInfoIndex, key_directory: bool) -> Arc<dyn snix_lower_store::backend::Backend> {
    if key_directory {
        index.start_key_directory();
    }
    snix_lower_store::backend::index(index)
}

/// The served store of a lower dir and a state dir's index (created when
/// `create`), with the key directory unless not `key_directory`.
pub(crate) fn open_store(lower_dir: &Path, store: &StoreArgs, create: bool, key_directory: bool) -> Result<LowerStore> {
    let sd = store_dir(&store.store_dir)?;
    let lower = LowerDir::open(lower_dir).map_err(anyhow::Error::msg)?;
    let index = if create {
        std::fs::create_dir_all(&store.state_dir)
            .with_context(|| format!("creating state dir {}", store.state_dir.display()))?;
        PathInfoIndex::open_or_create(&store.state_dir, sd.as_str())?
    } else {
        PathInfoIndex::open(&store.state_dir, sd.as_str())?
    };
    Ok(LowerStore {
        backend: served_index(index, key_directory),
        lower,
        store_dir: sd,
    })
}
