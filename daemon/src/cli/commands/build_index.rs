//! `build-index`: write an image's own read-only index into the lower dir
//! being built (or `--output`), reproducibly with `--image-id` and
//! `SOURCE_DATE_EPOCH`.
//!
//! Invariant: the index is written complete or not at all.

use anyhow::{Context, Result};
use std::process::ExitCode;

use snix_lower_store::progress;
use snix_lower_store_index::image;
use snix_lower_store_types::lower::LowerDir;
use snix_lower_store_types::path_info::PathInfo;

use super::source::{import_options, read_source};
use super::store_dir;
use crate::cli::flags::BuildIndexArgs;

/// `build-index`: validates the source as `import` does and writes the
/// image's own index (complete, or not at all).
pub(crate) fn run(args: BuildIndexArgs) -> Result<ExitCode> {
    let sd = store_dir(&args.store_dir)?;
    let lower = LowerDir::open(&args.lower_dir).map_err(anyhow::Error::msg)?;
    let progress = progress::for_command("build-index", args.quiet);
    progress.phase("reading the source", None);
    let (batch, realisations) = read_source(&args.source, &sd).context("build-index")?;
    let output = match args.output {
        Some(o) => o,
        None => image::default_location(&args.lower_dir, &args.store_dir).with_context(|| {
            format!(
                "build-index: --lower-dir {} does not end in the store dir {}, so it has no image root for the \
                 index: lay the image out as <root>{} (the lower dir) with the index going to \
                 <root>/.snix-lower-store, outside the store dir, where a local-overlay store never shows it; \
                 or give --output",
                args.lower_dir.display(),
                args.store_dir,
                args.store_dir
            )
        })?,
    };
    let batch = with_source_date_epoch(batch)?;
    let opts = image::BuildOptions {
        import: import_options(&args.source),
        image_id: args.image_id,
        progress: progress.clone(),
    };
    let report = image::build(&output, &sd, &lower, batch, realisations, opts)?;
    let summary = format!(
        "wrote {}: {} paths indexed, {} store paths in {}",
        output.display(),
        report.paths,
        report.lower_entries,
        args.lower_dir.display()
    );
    progress.finish(Some(&summary));
    println!("{summary}");
    Ok(ExitCode::SUCCESS)
}

/// Reproducible builds: with `SOURCE_DATE_EPOCH` set (as nixpkgs' stdenv
/// sets it), entries without a registration time (a registration has none)
/// get that time instead of the time of the build.
pub(crate) fn with_source_date_epoch(mut batch: Vec<PathInfo>) -> Result<Vec<PathInfo>> {
    let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") else {
        return Ok(batch);
    };
    let t: u64 = v
        .trim()
        .parse()
        .with_context(|| format!("build-index: SOURCE_DATE_EPOCH={v:?} is not a number of seconds"))?;
    for e in batch.iter_mut().filter(|e| e.registration_time == 0) {
        e.registration_time = t;
    }
    Ok(batch)
}
