//! `--rss N`: our daemon serving N paths (a state-dir import, or with
//! `--image-index` the image's own index) under the mixed load; its peak RSS.

use anyhow::Result;
use std::sync::Arc;

use snix_lower_store_bench::procfs;

use super::{gen_store, loadavg, spec, startup};
use crate::args::Args;
use crate::daemons::{import_ours, start_ours, start_ours_on};
use crate::env::Env;
use crate::load::{report_load, run_load, Mix};

pub(crate) fn mode_rss(env: &Env, args: &Args, n: usize, mix: &Mix) -> Result<()> {
    let store = gen_store(env, &spec(args, n, true))?;
    let state = env
        .work
        .join(format!("stores/{}-ours-state", spec(args, n, true).key()));
    let d = if args.image_index {
        let index = startup::ensure_image_index(env, &store)?;
        let empty = env.work.join("run/rss-empty-state");
        let _ = std::fs::remove_dir_all(&empty);
        std::fs::create_dir_all(&empty)?;
        println!("# serving the image's own index {} (immutable)", index.display());
        start_ours_on(env, &store.store_dir(), &empty, Some(&index), None)?
    } else {
        if !state.join("index.sqlite").exists() {
            let t = import_ours(env, &store, &state)?;
            println!("# imported in {t:.1}s");
        }
        println!("# serving the state-dir index {}", state.join("index.sqlite").display());
        start_ours(env, &store, &state)?
    };
    let paths = Arc::new(store.paths);
    let r = run_load(&d, &paths, args.connections, args.seconds, mix, args.batch)?;
    report_load("mixed load", &[("ours", &d, &r)]);
    println!(
        "{:<44} {:>10.1} MiB ({} kB anonymous, {} kB file-backed now)",
        format!("peak RSS (VmHWM) serving {n} paths"),
        d.peak_rss_mib(),
        procfs::status_kib(d.pid(), "RssAnon").unwrap_or(0),
        procfs::status_kib(d.pid(), "RssFile").unwrap_or(0),
    );
    println!("# load average at the end: {}", loadavg());
    Ok(())
}
