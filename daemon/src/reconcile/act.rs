//! Carrying out a reconcile plan: deletions through Nix's own
//! `nix-store --delete --ignore-liveness` on the local-overlay store, and
//! the in-place refresh of referenced changed rows with exactly the
//! statement of Nix's `LocalStore::updatePathInfo`.
//!
//! Invariants: paths are handed to Nix referrers first, in batches, so no
//! batch holds a path whose referrer stays valid (Nix refuses that); the
//! only SQL written is `UPDATE ValidPaths SET narSize, hash, ultimate, sigs,
//! ca WHERE path`, in one transaction, with Nix's encodings.

use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use super::plan::{referrers_first, Changed, Plan, UpperDb};
use snix_lower_store_types::content_address::ContentAddress;

/// Paths per `nix-store --delete` call (keeps the argument list short).
const BATCH: usize = 256;

/// What to do: paths to delete through Nix (referrers first) and changed
/// rows to refresh in place.
pub(crate) struct Actions {
    pub delete: Vec<String>,
    pub update: Vec<Changed>,
}

/// Lost rows, unreferenced changed rows and, when `invalidate_broken`, the
/// broken paths are deleted; referenced changed rows are updated.
pub(crate) fn actions(db: &UpperDb, plan: &Plan, invalidate_broken: bool) -> Actions {
    let mut delete: BTreeSet<String> = plan.lost.keys().cloned().collect();
    if invalidate_broken {
        delete.extend(plan.broken.iter().map(|b| b.path.clone()));
    }
    delete.extend(plan.changed.iter().filter(|c| !c.referenced).map(|c| c.path.clone()));
    let update = plan
        .changed
        .iter()
        .filter(|c| c.referenced && !delete.contains(&c.path))
        .cloned()
        .collect();
    Actions {
        delete: referrers_first(db, &delete),
        update,
    }
}

/// `nix-store --store URL --delete --ignore-liveness P…`, in batches.
/// `--ignore-liveness` skips the permanent GC roots only: a path that is a
/// temporary root of a running Nix process makes Nix refuse, and so us.
pub(crate) fn delete_through_nix(nix_store: &Path, store_url: &str, paths: &[String]) -> Result<()> {
    for batch in paths.chunks(BATCH) {
        let mut cmd = Command::new(nix_store);
        cmd.args(["--store", store_url])
            .args(["--option", "extra-experimental-features", "local-overlay-store"])
            .args(["--delete", "--ignore-liveness"])
            .args(batch);
        let out = cmd
            .output()
            .with_context(|| format!("running {} --delete", nix_store.display()))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = err.lines().rev().take(8).collect();
            bail!(
                "{} --store … --delete --ignore-liveness ({} paths, first {}) failed ({}): {}",
                nix_store.display(),
                batch.len(),
                batch[0],
                out.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            );
        }
        tracing::info!(
            paths = batch.len(),
            "deleted through nix-store --delete --ignore-liveness"
        );
    }
    Ok(())
}

/// Refreshes referenced changed rows to the new lower's info, as Nix's own
/// `LocalStore::updatePathInfo` writes a row (NixOS/nix
/// `src/libstore/local-store.cc`: the `UpdatePathInfo` statement
/// "update ValidPaths set narSize = ?, hash = ?, ultimate = ?, sigs = ?, ca
/// = ? where path = ?;" prepared with the store's other statements
/// (tag 2.26.3 line 315, tag 2.34.8 line 336), bound in `updatePathInfo`
/// (2.26.3 line 783, 2.34.8 line 776): narSize NULL when 0, hash as `sha256:<base16>`, ultimate 1 or
/// NULL, sigs space-separated or NULL, ca rendered or NULL). Nix calls it
/// from `registerValidPaths` for a path already valid (2.26.3 line 969,
/// 2.34.8 line 916), which is what a
/// re-registration of the lower's info would do; no Nix command offers it
/// for a path that other valid paths refer to (deleting it would delete them).
pub(crate) fn update_like_nix(db: &Path, rows: &[Changed]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let conn =
        rusqlite::Connection::open(db).with_context(|| format!("opening Nix's upper database {}", db.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(60))?;
    let tx = conn.unchecked_transaction()?;
    {
        let mut st =
            tx.prepare("update ValidPaths set narSize = ?, hash = ?, ultimate = ?, sigs = ?, ca = ? where path = ?;")?;
        for c in rows {
            let n = &c.new;
            let size = (n.nar_size != 0).then_some(n.nar_size as i64);
            let hash = format!("sha256:{}", n.nar_hash.to_base16());
            let ultimate = n.ultimate.then_some(1i64);
            let sigs = (!n.sigs.is_empty()).then(|| snix_lower_store_types::path_info::join_sigs(&n.sigs));
            let ca = n.ca.as_ref().map(ContentAddress::render);
            let changed = st
                .execute(rusqlite::params![size, hash, ultimate, sigs, ca, c.path])
                .with_context(|| format!("updating {} in {}", c.path, db.display()))?;
            if changed != 1 {
                bail!("updating {} in {}: the row is gone", c.path, db.display());
            }
        }
    }
    tx.commit()
        .with_context(|| format!("committing the update of {}", db.display()))?;
    tracing::info!(paths = rows.len(), "refreshed referenced changed rows in place");
    Ok(())
}
