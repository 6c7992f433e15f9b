//! `--import-only N`: our import of N registration entries against Nix's
//! `nix-store --load-db` of the same file (wall time).

use anyhow::Result;

use super::{gen_store, spec};
use crate::args::Args;
use crate::daemons::{import_ours, load_db_nix};
use crate::env::Env;

pub(crate) fn mode_import(env: &Env, args: &Args, n: usize) -> Result<()> {
    let store = gen_store(env, &spec(args, n, true))?;
    let refs: usize = std::fs::read_to_string(&store.registration)
        .map(|s| s.lines().count())
        .unwrap_or(0)
        .saturating_sub(5 * n);
    println!(
        "# registration {} ({n} entries, {refs} references)",
        store.registration.display()
    );
    let state = env.work.join("run/import-state");
    let ours = import_ours(env, &store, &state)?;
    let nix = load_db_nix(env, &store)?;
    println!("{:<44} {:>12} {:>12} {:>10}", "import", "ours", "nix", "nix/ours");
    println!(
        "{:<44} {:>11.2}s {:>11.2}s {:>9.2}x",
        format!("{n} registration entries (wall)"),
        ours,
        nix,
        nix / ours
    );
    let _ = std::fs::remove_dir_all(&state);
    Ok(())
}
