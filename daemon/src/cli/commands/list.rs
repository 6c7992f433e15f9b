//! `list`: the indexed paths, one a line or as a JSON array.

use anyhow::Result;
use std::process::ExitCode;

use snix_lower_store_index::PathInfoIndex;

use super::store_dir;
use crate::cli::flags::ListArgs;

/// `list`: every indexed path, one a line or as a JSON array.
pub(crate) fn run(args: ListArgs) -> Result<ExitCode> {
    let sd = store_dir(&args.store.store_dir)?;
    let index = PathInfoIndex::open(&args.store.state_dir, sd.as_str())?;
    let all: Vec<String> = index.all_paths()?.iter().map(|p| sd.display(p)).collect();
    if args.json {
        println!("{}", serde_json::to_string(&all)?);
    } else {
        for p in all {
            println!("{p}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
