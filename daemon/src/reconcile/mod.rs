//! `reconcile`: makes Nix's upper database of a local-overlay store agree
//! with a replaced lower (image rotation) before the overlay is used again.
//!
//! Why: Nix's `LocalOverlayStore::isValidPathUncached` copies a lower
//! path's info and its closure into the upper database, and answers from the
//! upper database first. After the lower is replaced, those copies can name
//! paths that are gone, or carry the old info of a path the new lower has
//! with other contents.
//!
//! Rule (no old index needed): every upper-database row whose path has no
//! entry in the upper layer (an OverlayFS whiteout counts as none) must be
//! in the new lower index with equal info. Compared: `narHash`, `narSize`
//! and `references` (the signature fingerprint Nix verifies; wrong, Nix's
//! `--verify --check-contents` reports the path as modified and signatures
//! fail), `ca` (decides whether the path is trusted as content-addressed)
//! and `sigs` (as a set; what Nix would copy now). Not compared: `deriver`
//! (Nix's own `updatePathInfo` never rewrites it and fixed-output paths
//! legitimately have other derivers in another store), `registrationTime`
//! and `ultimate` (local bookkeeping).
//! - lost: not in the new lower, or in it with other references (the
//!   upper `Refs` rows cannot be rewritten through Nix);
//! - changed: in it with another narHash/narSize/ca/sigs;
//! - broken: the referrer closure of the lost rows in the upper `Refs`
//!   (in particular paths built on top, with upper files): they stay
//!   "valid" in Nix's eyes with a closure that is not there.
//!
//! Actions, through Nix wherever Nix offers one (checked against NixOS/nix
//! `gc.cc` `collectGarbage` (`gcDeleteSpecific`), `local-overlay-store.cc`
//! `deleteStorePath`, and by the e2e `rotation` scenario with Nix 2.26 and
//! 2.34):
//! - lost rows, unreferenced changed rows, and with `--on-broken
//!   invalidate` the broken paths: `nix-store --store <url> --delete
//!   --ignore-liveness`, referrers first. Nix invalidates each row
//!   (`invalidatePathChecked`) and calls the overlay's `deleteStorePath`,
//!   which deletes nothing when the upper layer has no entry (a lower copy)
//!   and the upper files of a broken path (not in the lower) through the
//!   merged dir, so a broken path is rebuilt or substituted on next use. A
//!   changed row deleted this way is copied again, with the new info, the
//!   next time Nix checks it. `--ignore-liveness` ignores GC roots: a root
//!   of a broken path is left dangling, as the operator chose by asking for
//!   invalidation;
//! - changed rows that other rows refer to: deleting them would delete
//!   their referrers, and no Nix command rewrites a row's info, so they are
//!   updated with exactly Nix's `updatePathInfo` statement (see [`act`]);
//! - with `--on-broken refuse` and any broken path: nothing is changed
//!   (exit 1, the broken paths and the lost paths they need named).
//!
//! After acting, the upper database is read and planned again: anything
//! left is an error. `--settled-file` records the lower identity last
//! settled (see [`settled`]) only after success; a match exits at once.

mod act;
mod plan;
mod settled;

use anyhow::{bail, Result};
use std::path::Path;
use std::time::Instant;

use crate::overlay_url::Parsed;
use snix_lower_store_index::PathInfoIndex;

/// What to do with broken paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnBroken {
    /// Delete them (and their referrers) through Nix.
    Invalidate,
    /// Change nothing and exit 1.
    Refuse,
}

/// The inputs of one reconcile.
pub struct Options<'a> {
    pub store_url: &'a str,
    pub nix_store: &'a Path,
    pub on_broken: OnBroken,
    pub settled_file: Option<&'a Path>,
    pub index: &'a PathInfoIndex,
}

/// How a reconcile ended (errors are `Err`).
#[derive(Debug)]
pub enum Outcome {
    /// Nothing to do, or done: the one-line summary.
    Settled(String),
    /// Broken paths under `--on-broken refuse`: what to tell the operator.
    Refused(String),
}

/// Runs one reconcile (see the module header).
pub fn run(o: &Options) -> Result<Outcome> {
    let t0 = Instant::now();
    let url = Parsed::parse(o.store_url).map_err(|e| anyhow::anyhow!("reconcile --store-url: {e}"))?;
    let db = url.upper_db();
    let identity = settled::identity(o.index, &db)?;
    if let Some(f) = o.settled_file {
        if settled::matches(f, &identity)? {
            return Ok(Outcome::Settled(format!(
                "reconcile: lower unchanged since last settled ({}): nothing to do in {:.3}s",
                f.display(),
                t0.elapsed().as_secs_f64()
            )));
        }
    }
    if !db.exists() {
        settle(o.settled_file, &identity)?;
        return Ok(Outcome::Settled(format!(
            "reconcile: no upper database yet ({}): nothing to do in {:.3}s",
            db.display(),
            t0.elapsed().as_secs_f64()
        )));
    }
    let lookup = |p: &snix_lower_store_types::StorePath| Ok(o.index.path_info(p)?);
    let upper = plan::read_upper_db(&db)?;
    let plan = plan::plan(&upper, &url.store_dir, &url.upper_layer, &lookup)?;
    log_plan(&plan);
    if !plan.broken.is_empty() && o.on_broken == OnBroken::Refuse {
        return Ok(Outcome::Refused(refusal(&plan, o.store_url)));
    }
    let acts = act::actions(&upper, &plan, true);
    act::delete_through_nix(o.nix_store, o.store_url, &acts.delete)?;
    act::update_like_nix(&db, &acts.update)?;
    let after = plan::plan(&plan::read_upper_db(&db)?, &url.store_dir, &url.upper_layer, &lookup)?;
    if !after.is_empty() {
        bail!(
            "reconcile: after acting, {} still needs work: {}",
            db.display(),
            describe(&after)
        );
    }
    settle(o.settled_file, &identity)?;
    Ok(Outcome::Settled(format!(
        "reconcile: {} rows checked, {} lost, {} changed, {} broken, {} invalidated, {} updated in place in {:.3}s",
        plan.checked,
        plan.lost.len(),
        plan.changed.len(),
        plan.broken.len(),
        acts.delete.len(),
        acts.update.len(),
        t0.elapsed().as_secs_f64()
    )))
}

fn settle(file: Option<&Path>, identity: &str) -> Result<()> {
    match file {
        Some(f) => settled::write(f, identity),
        None => Ok(()),
    }
}

fn log_plan(plan: &plan::Plan) {
    for (p, why) in &plan.lost {
        tracing::info!(STORE_PATH = %p, why, "lost: the upper database holds a lower path the lower no longer has");
    }
    for c in &plan.changed {
        tracing::info!(STORE_PATH = %c.path, fields = ?c.fields, "changed: the new lower has other info");
    }
    for b in &plan.broken {
        tracing::warn!(STORE_PATH = %b.path, needs = ?b.needs, "broken: its closure reaches a lost path");
    }
}

/// A short description of a plan (first few paths of each kind).
fn describe(p: &plan::Plan) -> String {
    let first = |v: Vec<&str>| {
        let n = v.len();
        let mut s: Vec<&str> = v.into_iter().take(5).collect();
        if n > 5 {
            s.push("…");
        }
        format!("{n} [{}]", s.join(", "))
    };
    format!(
        "lost {}, changed {}, broken {}",
        first(p.lost.keys().map(String::as_str).collect()),
        first(p.changed.iter().map(|c| c.path.as_str()).collect()),
        first(p.broken.iter().map(|b| b.path.as_str()).collect())
    )
}

/// The refusal message: every broken path with the lost paths it needs,
/// and how to proceed.
fn refusal(p: &plan::Plan, url: &str) -> String {
    let mut s = format!(
        "reconcile refused: {} valid path(s) of the upper store depend on {} path(s) the new lower no longer has; \
         nothing was changed.\n",
        p.broken.len(),
        p.lost.len()
    );
    for b in &p.broken {
        let kind = if b.in_upper { "upper layer" } else { "lower copy" };
        s.push_str(&format!("  broken ({kind}): {}\n", b.path));
        for n in b.needs.iter().take(10) {
            s.push_str(&format!("    needs lost: {n}\n"));
        }
        if b.needs.len() > 10 {
            s.push_str(&format!("    … and {} more\n", b.needs.len() - 10));
        }
    }
    s.push_str(&format!(
        "To proceed: rerun with --on-broken invalidate (Nix deletes the broken paths, to be rebuilt or \
         substituted on next use), or put the lost paths back (a lower that has them, or rebuild/substitute \
         them into {url} before the rotation)."
    ));
    s
}

#[cfg(test)]
mod tests;
