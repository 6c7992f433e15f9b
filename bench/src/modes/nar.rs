//! `--nar-bytes BYTES`: NarFromPath of one object of that size, ours against
//! Nix's daemon on one connection (throughput and daemon CPU, median of 5).

use anyhow::{bail, Result};
use std::time::{Duration, Instant};

use snix_lower_store_bench::gen;
use snix_lower_store_bench::stats::median;
use snix_lower_store_protocol::request::NarFromPath;
use snix_lower_store_testkit::client::Client;

use crate::daemons::{import_ours, load_db_nix, start_nix, start_ours};
use crate::env::Env;
use crate::load::client_rt;

pub(crate) fn mode_nar(env: &Env, bytes: u64) -> Result<()> {
    let t0 = Instant::now();
    let store = gen::generate_big(&env.work.join("stores"), bytes)?;
    println!(
        "# one object of {bytes} bytes ready in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    let state = env.work.join(format!("stores/big-{bytes}-ours-state"));
    if !state.join("index.sqlite").exists() {
        import_ours(env, &store, &state)?;
    }
    if !store.root.join("nix/var/nix/db/db.sqlite").exists() {
        load_db_nix(env, &store)?;
    }
    let (p, size) = store.paths[0].clone();
    // Warm the page cache.
    std::io::copy(
        &mut std::fs::File::open(store.store_dir().join(p.trim_start_matches("/nix/store/")))?,
        &mut std::io::sink(),
    )?;
    println!(
        "{:<44} {:>12} {:>12} {:>10}",
        format!("NarFromPath of {size} NAR bytes"),
        "ours",
        "nix",
        "ours/nix"
    );
    let mut rates = vec![];
    let mut cpus = vec![];
    for kind in ["ours", "nix"] {
        let d = if kind == "ours" {
            start_ours(env, &store, &state)?
        } else {
            start_nix(env, &store)?
        };
        let rt = client_rt();
        let cpu0 = d.cpu();
        let times = rt.block_on(async {
            use tokio::io::AsyncReadExt;
            let mut c = Client::connect(&d.socket, 38).await?;
            let mut buf = vec![0u8; 1 << 20];
            let mut times = vec![];
            for _ in 0..5 {
                let t0 = Instant::now();
                c.call(&NarFromPath { path: p.clone() }).await?;
                let mut left = size;
                let r = c.r.get_mut();
                while left > 0 {
                    let k = r.read(&mut buf[..left.min(1 << 20) as usize]).await?;
                    if k == 0 {
                        bail!("EOF with {left} NAR bytes to go");
                    }
                    left -= k as u64;
                }
                times.push(t0.elapsed().as_secs_f64());
            }
            anyhow::Ok(times)
        })?;
        std::thread::sleep(Duration::from_millis(300));
        cpus.push((d.cpu() - cpu0) / 5.0);
        rates.push(size as f64 / median(times) / 1e9);
        drop(d);
    }
    println!(
        "{:<44} {:>8.2} GB/s {:>7.2} GB/s {:>9.2}x",
        "throughput (median of 5, one connection)",
        rates[0],
        rates[1],
        rates[0] / rates[1]
    );
    println!(
        "{:<44} {:>11.2}s {:>11.2}s",
        "daemon CPU per transfer", cpus[0], cpus[1]
    );
    Ok(())
}
