//! `info`: one indexed path's info, as text or as JSON with the names
//! `nix path-info --json` uses.

use anyhow::{bail, Result};
use std::process::ExitCode;

use snix_lower_store_index::PathInfoIndex;
use snix_lower_store_types::path_info::join_sigs;

use super::store_dir;
use crate::cli::flags::InfoArgs;

/// `info`: one path's info, as text or JSON (`nix path-info --json`'s names).
pub(crate) fn run(args: InfoArgs) -> Result<ExitCode> {
    let InfoArgs { path, store, json } = args;
    let sd = store_dir(&store.store_dir)?;
    let index = PathInfoIndex::open(&store.state_dir, sd.as_str())?;
    let p = sd.parse(&path)?;
    let Some(info) = index.path_info(&p)? else {
        bail!("info: {path} is not in the index {}", index.db_path().display());
    };
    let refs: Vec<String> = info.references.iter().map(|r| sd.display(r)).collect();
    let deriver = info.deriver.as_ref().map(|d| sd.display(d));
    if json {
        let v = serde_json::json!({
            "path": path,
            "narHash": info.nar_hash.to_sri(),
            "narSize": info.nar_size,
            "references": refs,
            "deriver": deriver,
            "registrationTime": info.registration_time,
            "ultimate": info.ultimate,
            "signatures": info.sigs.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            "ca": info.ca.as_ref().map(|c| c.render()),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("path:              {path}");
        println!("nar hash:          {}", info.nar_hash.to_sri());
        println!("nar size:          {}", info.nar_size);
        println!("deriver:           {}", deriver.unwrap_or_default());
        println!("registration time: {}", info.registration_time);
        println!("signatures:        {}", join_sigs(&info.sigs));
        println!("ca:                {}", info.ca.map(|c| c.render()).unwrap_or_default());
        println!("references:");
        for r in refs {
            println!("  {r}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
