//! What `import` and `build-index` share: reading the one source given
//! (a registration, `nix path-info --json`, or a Nix database; `-` is stdin)
//! and the import checks its flags ask for.

use anyhow::{bail, Context, Result};
use std::io::Read;

use snix_lower_store_index::import::{self, ImportOptions};
use snix_lower_store_types::StoreDir;

use crate::cli::flags::SourceArgs;

pub(crate) fn read_input(src: &str) -> Result<String> {
    if src == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("reading stdin")?;
        Ok(s)
    } else {
        std::fs::read_to_string(src).with_context(|| format!("reading {src}"))
    }
}

/// The entries (and the Nix database's realisations) of the one source given.
pub(crate) fn read_source(
    src: &SourceArgs,
    sd: &StoreDir,
) -> Result<(
    Vec<snix_lower_store_types::path_info::PathInfo>,
    Vec<import::NewRealisation>,
)> {
    if let Some(f) = &src.registration {
        Ok((import::parse_registration(&read_input(f)?, sd, f)?, Vec::new()))
    } else if let Some(f) = &src.path_info_json {
        Ok((import::parse_path_info_json(&read_input(f)?, sd, f)?, Vec::new()))
    } else if let Some(db) = &src.nix_db {
        let realisations = import::read_nix_db_realisations(db, sd)?;
        Ok((import::read_nix_db(db, sd)?, realisations))
    } else {
        bail!("give one of --registration, --path-info-json or --nix-db");
    }
}

/// The checks `--check-content` and the content-address proof flags ask for.
pub(crate) fn import_options(src: &SourceArgs) -> ImportOptions {
    ImportOptions {
        check_content: src.check_content,
        ca_proof: src.ca_proof.options(),
    }
}
