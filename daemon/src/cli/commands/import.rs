//! `import`: add the path infos of one source to the state dir's index, all
//! or nothing.

use anyhow::{Context, Result};
use std::process::ExitCode;

use snix_lower_store::progress;
use snix_lower_store_index::import;
use snix_lower_store_types::lower::LowerDir;

use super::source::{import_options, read_source};
use super::store_dir;
use crate::cli::flags::ImportArgs;

/// `import`: parses the one source given, then imports it (and the Nix
/// database's realisations) in one transaction.
pub(crate) fn run(args: ImportArgs) -> Result<ExitCode> {
    let sd = store_dir(&args.store.store_dir)?;
    let lower = LowerDir::open(&args.lower_dir).map_err(anyhow::Error::msg)?;
    let progress = progress::for_command("import", args.quiet);
    progress.phase("reading the source", None);
    let (batch, realisations) = read_source(&args.source, &sd).context("import")?;
    let state_dir = &args.store.state_dir;
    std::fs::create_dir_all(state_dir).with_context(|| format!("creating state dir {}", state_dir.display()))?;
    let n = batch.len();
    let nr = realisations.len();
    let opts = import_options(&args.source);
    let report = import::import_reporting(state_dir, &sd, &lower, batch, realisations, opts, &progress)?;
    let summary = format!(
        "imported {n} entries: {} added, {} already indexed",
        report.added, report.unchanged
    );
    progress.finish(Some(&summary));
    println!("{summary}");
    if nr > 0 {
        println!("imported {nr} realisations of content-addressed derivation outputs");
    }
    Ok(ExitCode::SUCCESS)
}
