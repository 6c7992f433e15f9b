//! The bench's modes, one module each (the default comparison, import,
//! RSS, NAR throughput, instruction counts, start-up and image sizes), and
//! what they share: the machine line, the generated store's spec, and the
//! load average.

use anyhow::Result;
use std::time::Instant;

use snix_lower_store_bench::gen::{self, Spec, Store};

use crate::args::Args;
use crate::env::Env;

pub(crate) mod compare;
pub(crate) mod import;
pub(crate) mod instructions;
pub(crate) mod nar;
pub(crate) mod rss;
pub(crate) mod startup;

pub(crate) fn print_machine(env: &Env) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let nproc = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "# machine: {nproc} CPUs ({cpu}); load average {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    println!("# baseline: {} ({})", env.nix_version, env.rootfs.display());
}

pub(crate) fn spec(args: &Args, n: usize, tiny: bool) -> Spec {
    Spec {
        n,
        fanout: args.fanout,
        extra_refs: args.extra_refs,
        tiny,
    }
}

pub(crate) fn gen_store(env: &Env, s: &Spec) -> Result<Store> {
    let t0 = Instant::now();
    let st = gen::generate(&env.work.join("stores"), s)?;
    println!(
        "# lower store {} ({} paths) ready in {:.1}s",
        st.root.display(),
        st.paths.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok(st)
}

pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}
