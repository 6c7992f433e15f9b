//! `import`: add the path infos of one source to the state dir's index, all
//! or nothing.

use anyhow::{Context, Result};
use std::process::ExitCode;

use snix_lower_store::index::import;
use snix_lower_store::lower::LowerDir;

use super::source::{import_options, read_source};
use super::store_dir;
use crate::cli::flags::ImportArgs;

/// `import`: parses the one source given, then imports it (and the Nix
/// database's realisations) in one transaction.
pub(crate) fn run(args: ImportArgs) -> Result<ExitCode> {
    let sd = store_dir(&args.store.store_dir)?;
    let lower = LowerDir::open(&args.lower_dir).map_err(anyhow::Error::msg)?;
    let (batch, realisations) = read_source(&args.source, &sd).context("import")?;
    let state_dir = &args.store.state_dir;
    std::fs::create_dir_all(state_dir).with_context(|| format!("creating state dir {}", state_dir.display()))?;
    let n = batch.len();
    let nr = realisations.len();
    let opts = import_options(&args.source);
    let report = import::import_with_realisations(state_dir, &sd, &lower, batch, realisations, opts)?;
    println!(
        "imported {n} entries: {} added, {} already indexed",
        report.added, report.unchanged
    );
    if nr > 0 {
        println!("imported {nr} realisations of content-addressed derivation outputs");
    }
    Ok(ExitCode::SUCCESS)
}
