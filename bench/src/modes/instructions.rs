//! `--instructions N`: instructions (user and kernel, `perf stat`) per
//! QueryPathInfo and per connection, from runs of 1 and N+1 requests, so the
//! figures do not depend on the machine's load.

use anyhow::{Context, Result};
use std::path::Path;

use super::{gen_store, spec};
use crate::args::Args;
use crate::daemons::{import_ours, load_db_nix, start_nix, start_ours, Daemon};
use crate::env::Env;
use crate::load::{connect_latency, sequential_qpi};

/// (user, kernel) instructions counted by `perf stat -x,` in `file`.
pub(crate) fn read_perf(file: &Path) -> Result<(f64, f64)> {
    let s = std::fs::read_to_string(file)?;
    let get = |ev: &str| -> Result<f64> {
        s.lines()
            .find(|l| l.contains(ev))
            .and_then(|l| l.split(',').next())
            .and_then(|v| v.parse::<f64>().ok())
            .with_context(|| format!("no {ev} in {}: {s}", file.display()))
    };
    Ok((get("instructions:u")?, get("instructions:k")?))
}

pub(crate) fn mode_instructions(env: &mut Env, args: &Args, n: usize) -> Result<()> {
    let sp = spec(args, args.paths, false);
    let store = gen_store(env, &sp)?;
    let state = env.work.join(format!("stores/{}-ours-state", sp.key()));
    import_ours(env, &store, &state)?;
    load_db_nix(env, &store)?;
    let out = env.work.join("run/perf-stat.txt");
    env.perf_out = Some(out.clone());
    let paths = store.paths.clone();
    let conns = args.connects.max(2);
    println!("| instructions (user + kernel) | ours | nix-daemon | ours/nix |");
    println!("|---|---|---|---|");
    let mut rows: Vec<(String, Vec<(f64, f64)>)> = vec![
        (format!("per QueryPathInfo (one connection, {n} requests)"), vec![]),
        (
            format!("per connection: connect, handshake, one QueryPathInfo, close ({conns} connections)"),
            vec![],
        ),
    ];
    for kind in ["ours", "nix"] {
        let measure = |what: &dyn Fn(&Daemon) -> Result<()>| -> Result<(f64, f64)> {
            let _ = std::fs::remove_file(&out);
            let d = if kind == "ours" {
                start_ours(env, &store, &state)?
            } else {
                start_nix(env, &store)?
            };
            what(&d)?;
            drop(d);
            read_perf(&out)
        };
        let base = measure(&|d| sequential_qpi(d, &paths, 1).map(|_| ()))?;
        let many = measure(&|d| sequential_qpi(d, &paths, n + 1).map(|_| ()))?;
        rows[0]
            .1
            .push(((many.0 - base.0) / n as f64, (many.1 - base.1) / n as f64));
        let cs = measure(&|d| connect_latency(d, &paths, conns).map(|_| ()))?;
        let c1 = measure(&|d| connect_latency(d, &paths, 1).map(|_| ()))?;
        rows[1]
            .1
            .push(((cs.0 - c1.0) / (conns - 1) as f64, (cs.1 - c1.1) / (conns - 1) as f64));
    }
    for (label, v) in rows {
        let fmt = |x: (f64, f64)| {
            format!(
                "{:.0} k ({:.0} k user + {:.0} k kernel)",
                (x.0 + x.1) / 1e3,
                x.0 / 1e3,
                x.1 / 1e3
            )
        };
        println!(
            "| {label} | {} | {} | {:.2} |",
            fmt(v[0]),
            fmt(v[1]),
            (v[0].0 + v[0].1) / (v[1].0 + v[1].1)
        );
    }
    Ok(())
}
