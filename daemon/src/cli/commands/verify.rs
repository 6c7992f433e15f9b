//! `verify`: every indexed path checked against the lower dir (and its NAR
//! re-hashed with `--check-content`); a non-zero exit on any problem.

use anyhow::Result;
use std::process::ExitCode;

use snix_lower_store::progress;
use snix_lower_store_index::PathInfoIndex;
use snix_lower_store_types::lower::LowerDir;

use super::store_dir;
use crate::cli::flags::VerifyArgs;

/// `verify`: prints each problem on stdout and a summary on stderr; fails
/// when there is any problem.
pub(crate) fn run(args: VerifyArgs) -> Result<ExitCode> {
    let sd = store_dir(&args.store.store_dir)?;
    let lower = LowerDir::open(&args.lower_dir).map_err(anyhow::Error::msg)?;
    let index = PathInfoIndex::open(&args.store.state_dir, sd.as_str())?;
    let progress = progress::for_command("verify", args.quiet);
    progress.phase("reading the index", None);
    let entries = index.all_hashes()?;
    let problems = snix_lower_store::verify::verify_reporting(&entries, &lower, &sd, args.check_content, &progress);
    progress.finish(Some(&format!("{} problem(s)", problems.len())));
    for p in &problems {
        println!("{p}");
    }
    let n = index.count()?;
    if problems.is_empty() {
        eprintln!(
            "verified {n} paths{}: no problems",
            if args.check_content { " with their contents" } else { "" }
        );
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("verified {n} paths: {} problem(s)", problems.len());
        Ok(ExitCode::FAILURE)
    }
}
