//! The default mode: both daemons on the same generated store, measured one
//! after the other (sequential latency, connect-to-first-answer, the
//! QueryPathInfo-only and mixed loads, RSS, and the local-overlay `-qR`),
//! then one markdown table with ours/nix ratios.
//!
//! Invariants: the two daemons' answers are checked equal first (`parity`),
//! so the figures compare the same work.

use anyhow::Result;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use snix_lower_store_bench::gen::Store;
use snix_lower_store_bench::procfs;
use snix_lower_store_bench::stats::{median, Samples};

use super::{gen_store, loadavg, spec};
use crate::args::Args;
use crate::daemons::{import_ours, load_db_nix, start_nix, start_ours, Daemon};
use crate::env::Env;
use crate::load::{
    connect_latency, echo_floor, parity, report_load, run_load, sequential_qpi, LoadResult, Mix, OpKind,
};
use crate::qr::{qr_url, time_qr, UrlOf};

/// Sum of the RSS of a daemon's children (Nix's per-connection workers).
pub(crate) fn children_rss_mib(pid: u32) -> f64 {
    procfs::children(pid)
        .iter()
        .filter_map(|&c| procfs::status_kib(c, "VmRSS"))
        .sum::<u64>() as f64
        / 1024.0
}

/// Samples the children's total RSS every 100 ms while `f` runs; returns the peak.
pub(crate) fn with_children_rss<T>(pid: u32, f: impl FnOnce() -> T) -> (T, f64) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let st = stop.clone();
    let h = std::thread::spawn(move || {
        let mut peak = 0f64;
        while !st.load(std::sync::atomic::Ordering::Relaxed) {
            peak = peak.max(children_rss_mib(pid));
            std::thread::sleep(Duration::from_millis(100));
        }
        peak
    });
    let r = f();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    (r, h.join().unwrap_or(0.0))
}

/// What one daemon measured, for the summary table.
pub(crate) struct PerDaemon {
    pub(crate) name: &'static str,
    pub(crate) seq_p50: f64,
    pub(crate) conn: Samples,
    pub(crate) qpi: LoadResult,
    pub(crate) mix: LoadResult,
    pub(crate) rss: f64,
    pub(crate) workers_rss: f64,
    pub(crate) qr: Option<(f64, Vec<f64>)>,
}

/// The comparison: metadata import, the echo floor, the daemons (checked
/// for parity), their loads, the local-overlay `-qR`, and the summary.
pub(crate) fn mode_compare(env: &mut Env, args: &Args, mix: &Mix) -> Result<()> {
    let which: Vec<&str> = args.daemons.split(',').collect();
    let store = gen_store(env, &spec(args, args.paths, false))?;
    let state = env
        .work
        .join(format!("stores/{}-ours-state", spec(args, args.paths, false).key()));
    let t_ours = import_ours(env, &store, &state)?;
    let t_nix = load_db_nix(env, &store)?;
    println!("# metadata: ours import {t_ours:.2}s, nix-store --load-db {t_nix:.2}s");
    let paths = Arc::new(store.paths.clone());

    let mut floor = echo_floor(&env.work, args.sequential)?;
    let daemons = start_daemons(env, &store, &state, &which, &paths)?;
    let mut per: Vec<PerDaemon> = Vec::new();
    for d in &daemons {
        per.push(measure(d, &paths, args, mix)?);
    }
    report_loads(&per, &daemons, args);
    if !args.skip_qr {
        time_qr_all(env, &store, &daemons, &mut per, args.qr_runs)?;
    }
    print_summary(&mut per, &mut floor, store.paths.len(), args, &env.nix_version);
    println!("# load average at the end: {}", loadavg());
    Ok(())
}

/// The daemons asked for by `--daemons` (ours first); with both, checks that
/// they answer QueryPathInfo alike.
fn start_daemons(
    env: &Env,
    store: &Store,
    state: &Path,
    which: &[&str],
    paths: &[(String, u64)],
) -> Result<Vec<Daemon>> {
    let mut daemons = Vec::new();
    if which.contains(&"ours") {
        daemons.push(start_ours(env, store, state)?);
    }
    if which.contains(&"nix") {
        daemons.push(start_nix(env, store)?);
    }
    if daemons.len() == 2 {
        let (n, proved) = parity(&daemons[0], &daemons[1], paths, 500)?;
        println!(
            "# parity: QueryPathInfo of {n} sampled paths identical from both daemons (registration time aside; \
             {proved} content addresses that ours proved at import and --load-db lacks)"
        );
    }
    Ok(daemons)
}

/// One daemon's measurements: sequential QueryPathInfo, connect latency, the
/// QueryPathInfo-only load (with its workers' RSS) and the mixed load.
fn measure(d: &Daemon, paths: &Arc<Vec<(String, u64)>>, args: &Args, mix: &Mix) -> Result<PerDaemon> {
    let qpi = Mix(vec![(OpKind::Qpi, 1)]);
    println!("# {}: measuring (load average {})", d.name, loadavg());
    let mut seq = sequential_qpi(d, paths, args.sequential)?;
    let conn = connect_latency(d, paths, args.connects)?;
    let (q, workers_rss) = with_children_rss(d.pid(), || {
        run_load(d, paths, args.connections, args.seconds, &qpi, args.batch)
    });
    let q = q?;
    let m = run_load(d, paths, args.connections, args.seconds, mix, args.batch)?;
    Ok(PerDaemon {
        name: d.name,
        seq_p50: seq.p50(),
        conn,
        qpi: q,
        mix: m,
        rss: d.peak_rss_mib(),
        workers_rss,
        qr: None,
    })
}

/// The two load reports: QueryPathInfo only, then the mix.
fn report_loads(per: &[PerDaemon], daemons: &[Daemon], args: &Args) {
    let rows: Vec<(&str, &Daemon, &LoadResult)> = per.iter().zip(daemons).map(|(p, d)| (p.name, d, &p.qpi)).collect();
    report_load(
        &format!(
            "QueryPathInfo only, {} connections, {}s",
            args.connections, args.seconds
        ),
        &rows,
    );
    let rows: Vec<(&str, &Daemon, &LoadResult)> = per.iter().zip(daemons).map(|(p, d)| (p.name, d, &p.mix)).collect();
    report_load(
        &format!("mix {}, {} connections, {}s", args.mix, args.connections, args.seconds),
        &rows,
    );
}

/// `nix-store -qR` through each daemon as the lower store; each daemon's
/// median and runs go into its `qr`.
fn time_qr_all(env: &mut Env, store: &Store, daemons: &[Daemon], per: &mut [PerDaemon], runs: usize) -> Result<()> {
    let urls = daemons
        .iter()
        .map(|d| {
            let (name, socket) = (d.name, d.socket.clone());
            let f: Box<UrlOf> = Box::new(move |env: &Env, upper: &str| qr_url(env, store, name, &socket, upper));
            (name, f)
        })
        .collect::<Vec<_>>();
    let all = time_qr(env, store, &urls, runs)?;
    for (p, times) in per.iter_mut().zip(all) {
        println!("# {}: nix-store -qR runs {:.3?}", p.name, times);
        p.qr = Some((median(times.clone()), times));
    }
    Ok(())
}

/// One row of the summary's markdown table: one column per daemon, and
/// their ratio when there are two.
fn row(label: &str, v: Vec<f64>, fmt: &dyn Fn(f64) -> String) {
    let ratio = if v.len() == 2 {
        format!("{:.3}", v[0] / v[1])
    } else {
        "-".into()
    };
    println!(
        "| {label} | {} | {} |",
        v.iter().map(|x| fmt(*x)).collect::<Vec<_>>().join(" | "),
        ratio
    );
}

fn us(x: f64) -> String {
    format!("{x:.0} µs")
}

fn mib(x: f64) -> String {
    format!("{x:.1} MiB")
}

fn secs(x: f64) -> String {
    format!("{x:.3} s")
}

/// The summary: header, then the load, latency, memory and `-qR` rows, then
/// the echo floor.
fn print_summary(per: &mut [PerDaemon], floor: &mut Samples, n_paths: usize, args: &Args, nix_version: &str) {
    let f = floor.p50();
    println!();
    println!(
        "## summary: {} paths, {} connections, {}s per load, {}",
        n_paths, args.connections, args.seconds, nix_version
    );
    let names: Vec<&str> = per.iter().map(|p| p.name).collect();
    println!("| measure | {} | ours/nix |", names.join(" | "));
    println!("|---|{}---|", "---|".repeat(names.len()));
    load_rows(per);
    latency_rows(per, f);
    memory_rows(per);
    if per.iter().all(|p| p.qr.is_some()) {
        qr_rows(per, n_paths, args.qr_runs);
    }
    println!("| echo floor p50 (p99) | {:.1} µs ({:.1} µs) | | |", f, floor.p99());
}

/// Throughput, latency and daemon CPU of the two loads.
fn load_rows(per: &mut [PerDaemon]) {
    row(
        "QueryPathInfo ops/s",
        per.iter().map(|p| p.qpi.ops_per_s()).collect(),
        &|x| format!("{x:.0}"),
    );
    row(
        "QueryPathInfo p50",
        per.iter_mut().map(|p| p.qpi.all.p50()).collect(),
        &us,
    );
    row(
        "QueryPathInfo p99",
        per.iter_mut().map(|p| p.qpi.all.p99()).collect(),
        &us,
    );
    row(
        "QueryPathInfo daemon CPU",
        per.iter().map(|p| p.qpi.daemon_cpu).collect(),
        &|x| format!("{x:.2} s"),
    );
    row(
        "QueryPathInfo daemon CPU per op",
        per.iter().map(|p| p.qpi.daemon_cpu / p.qpi.ops as f64 * 1e6).collect(),
        &|x| format!("{x:.1} µs"),
    );
    row("mix ops/s", per.iter().map(|p| p.mix.ops_per_s()).collect(), &|x| {
        format!("{x:.0}")
    });
    row("mix p50", per.iter_mut().map(|p| p.mix.all.p50()).collect(), &us);
    row("mix p99", per.iter_mut().map(|p| p.mix.all.p99()).collect(), &us);
    row("mix daemon CPU", per.iter().map(|p| p.mix.daemon_cpu).collect(), &|x| {
        format!("{x:.2} s")
    });
}

/// Connect-to-first-answer and one-connection latency, also against the
/// echo floor `f` (its p50).
fn latency_rows(per: &mut [PerDaemon], f: f64) {
    row(
        "connect-to-first-answer p50",
        per.iter_mut().map(|p| p.conn.p50()).collect(),
        &us,
    );
    row(
        "connect-to-first-answer p99",
        per.iter_mut().map(|p| p.conn.p99()).collect(),
        &us,
    );
    row(
        "1 connection QueryPathInfo p50",
        per.iter().map(|p| p.seq_p50).collect(),
        &us,
    );
    row(
        "… relative to the echo floor",
        per.iter().map(|p| p.seq_p50 / f).collect(),
        &|x| format!("{x:.1}×"),
    );
}

/// The daemon's peak RSS and its workers' (Nix's per-connection processes).
fn memory_rows(per: &[PerDaemon]) {
    row("peak RSS (VmHWM)", per.iter().map(|p| p.rss).collect(), &mib);
    row(
        "workers' RSS (sum, during the QPI load)",
        per.iter().map(|p| p.workers_rss).collect(),
        &mib,
    );
}

/// The local-overlay `-qR` median and minimum (every daemon has `qr`).
fn qr_rows(per: &[PerDaemon], n_paths: usize, runs: usize) {
    let qr = |p: &PerDaemon| p.qr.clone().unwrap_or_default();
    row(
        &format!(
            "local-overlay nix-store -qR, {} paths (median of {}, interleaved, after one warm-up each)",
            n_paths, runs
        ),
        per.iter().map(|p| qr(p).0).collect(),
        &secs,
    );
    row(
        "… min",
        per.iter()
            .map(|p| qr(p).1.iter().copied().fold(f64::INFINITY, f64::min))
            .collect(),
        &secs,
    );
}
