//! `reconcile`: after the lower changed, make Nix's upper database agree with
//! the new lower's index (chosen as `serve` chooses it, never created).
//!
//! Invariant: the exit status says the outcome: 0 settled, 1 refused, 2 error.

use anyhow::{bail, Context, Result};
use std::process::ExitCode;

use snix_lower_store_index::image;
use snix_lower_store_index::PathInfoIndex;
use snix_lower_store_types::lower::LowerDir;

use crate::cli::flags::ReconcileArgs;

/// `reconcile`: exit 0 settled, 1 refused (the message on stderr), 2 error.
pub(crate) fn run(args: ReconcileArgs) -> ExitCode {
    use snix_lower_store::reconcile::{self, Outcome};
    let res = (|| {
        let index = reconcile_index(&args)?;
        reconcile::run(&reconcile::Options {
            store_url: &args.store_url,
            nix_store: &args.nix_store,
            on_broken: args.on_broken,
            settled_file: args.settled_file.as_deref(),
            index: &index,
        })
    })();
    match res {
        Ok(Outcome::Settled(line)) => {
            tracing::info!("{line}");
            println!("{line}");
            ExitCode::SUCCESS
        }
        Ok(Outcome::Refused(msg)) => {
            tracing::error!("{msg}");
            eprintln!("{msg}");
            ExitCode::from(1)
        }
        Err(e) => {
            tracing::error!("reconcile failed: {e:#}");
            eprintln!("snix-lower-store: reconcile: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The new lower's index, chosen as `serve` chooses it, but never created:
/// an empty index would make every lower copy look lost.
pub(crate) fn reconcile_index(args: &ReconcileArgs) -> Result<PathInfoIndex> {
    let url = snix_lower_store::overlay_url::Parsed::parse(&args.store_url)
        .map_err(|e| anyhow::anyhow!("reconcile --store-url: {e}"))?;
    if url.store_dir != args.store.store_dir {
        bail!(
            "reconcile: the store URL's store dir {} differs from --store-dir {}",
            url.store_dir,
            args.store.store_dir
        );
    }
    let lower_dir = match (&args.lower_dir, &url.lower_real) {
        (Some(d), _) | (None, Some(d)) => d.clone(),
        (None, None) => bail!("reconcile: the store URL's lower-store has no real=: give --lower-dir"),
    };
    let in_image = image::default_location(&lower_dir, &args.store.store_dir).filter(|f| f.exists());
    let state_index = args.store.state_dir.join("index.sqlite");
    let file = match (&args.index, in_image) {
        (Some(f), _) => f.clone(),
        (None, Some(f)) if !state_index.exists() => f,
        (None, _) if state_index.exists() => {
            return Ok(PathInfoIndex::open(&args.store.state_dir, &args.store.store_dir)?)
        }
        (None, _) => bail!(
            "reconcile: no index of the new lower: neither {} nor an image index under {}; give --index or \
             --state-dir (a reconcile against an empty index would drop every lower path)",
            state_index.display(),
            lower_dir.display()
        ),
    };
    let lower = LowerDir::open(&lower_dir).map_err(anyhow::Error::msg)?;
    image::open_checked(&file, &args.store.store_dir, &lower, args.image_check).context("reconcile")
}
