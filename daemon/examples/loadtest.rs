//! Load test of the real binary: C concurrent connections × R mixed requests
//! (QueryPathInfo, IsValidPath, QueryValidPaths, QueryReferrers, NarFromPath)
//! on a generated lower store over a loopback unix socket. Every answer is
//! checked against the fixture: QueryReferrers returns exactly the paths
//! that reference the path, and each NAR hashes to the path's narHash from
//! QueryPathInfo, which is the hash the fixture imported. Fails on any error,
//! on a daemon that does not listen within `SOCKET_WAIT`, and on any panic
//! line in the daemon's log; prints throughput and the daemon's peak RSS
//! (VmHWM).
//!
//!   cargo run --release -p snix-lower-store --example loadtest -- [CONNECTIONS] [REQUESTS]

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use snix_lower_store::client::Client;
use snix_lower_store::panics::PANIC_MARKER;
use snix_lower_store::store::hash::hex_encode;
use snix_lower_store::store::StoreDir;

/// How long the daemon may take to accept connections.
const SOCKET_WAIT: Duration = Duration::from_secs(60);

/// The daemon process, killed however the load test ends (an early `?`
/// included), so no daemon outlives it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the fixture says each path must answer.
struct Expected {
    /// Base16 NAR hash, as QueryPathInfo sends it.
    nar_hash: String,
    /// Full paths of the paths referencing it.
    referrers: BTreeSet<String>,
}

fn expected(sd: &StoreDir, entries: &[snix_lower_store::index::import::NewPath]) -> HashMap<String, Expected> {
    let mut m: HashMap<String, Expected> = entries
        .iter()
        .map(|e| {
            let x = Expected {
                nar_hash: e.nar_hash.to_base16(),
                referrers: BTreeSet::new(),
            };
            (sd.display(&e.path), x)
        })
        .collect();
    for e in entries {
        for r in &e.references {
            if let Some(x) = m.get_mut(&sd.display(r)) {
                x.referrers.insert(sd.display(&e.path));
            }
        }
    }
    m
}

/// Wait until `sock` accepts a connection; a clear error if the daemon exits
/// first or `SOCKET_WAIT` passes.
async fn wait_for_socket(
    sock: &std::path::Path,
    daemon: &mut std::process::Child,
    log: &std::path::Path,
) -> anyhow::Result<()> {
    let t0 = Instant::now();
    while tokio::net::UnixStream::connect(sock).await.is_err() {
        let log = || std::fs::read_to_string(log).unwrap_or_default();
        if let Some(st) = daemon.try_wait()? {
            anyhow::bail!(
                "the daemon exited ({st}) before listening on {}; its log:\n{}",
                sock.display(),
                log()
            );
        }
        if t0.elapsed() > SOCKET_WAIT {
            anyhow::bail!(
                "the daemon did not accept connections on {} within {SOCKET_WAIT:?}; its log:\n{}",
                sock.display(),
                log()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let conns: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(512);
    let reqs: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(2000);
    let dir = tempfile::tempdir()?;
    let sd = StoreDir::new("/nix/store").map_err(anyhow::Error::msg)?;
    let lower = dir.path().join("lower");
    let entries = snix_lower_store::demo::generate(&lower, &sd, 50, 20)?;
    let reg = dir.path().join("reg");
    std::fs::write(&reg, snix_lower_store::demo::registration(&sd, &entries))?;
    let bin = std::env::current_exe()?
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("snix-lower-store"))
        .unwrap();
    let state = dir.path().join("state");
    let ok = std::process::Command::new(&bin)
        .args(["import", "--registration"])
        .arg(&reg)
        .arg("--lower-dir")
        .arg(&lower)
        .arg("--state-dir")
        .arg(&state)
        .stdout(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(ok.success(), "import failed");
    let sock = dir.path().join("sock");
    let log = dir.path().join("daemon.log");
    let mut daemon = KillOnDrop(
        std::process::Command::new(&bin)
            .args(["serve", "--log-level", "warn", "--log-target", "stderr", "--listen"])
            .arg(&sock)
            .arg("--lower-dir")
            .arg(&lower)
            .arg("--state-dir")
            .arg(&state)
            .stderr(std::fs::File::create(&log)?)
            .spawn()?,
    );
    wait_for_socket(&sock, &mut daemon.0, &log).await?;
    let want = Arc::new(expected(&sd, &entries));
    let paths: Vec<String> = entries.iter().map(|e| sd.display(&e.path)).collect();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..conns {
        let sock = sock.clone();
        let paths = paths.clone();
        let want = want.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(&sock, 38).await?;
            for i in 0..reqs {
                let p = &paths[(c * 7919 + i * 104729) % paths.len()];
                match i % 10 {
                    0..=4 => anyhow::ensure!(client.query_path_info(p).await?.is_some(), "{p} not valid"),
                    5 | 6 => anyhow::ensure!(client.is_valid_path(p).await?, "{p} not valid"),
                    7 => {
                        let batch: Vec<&str> = paths.iter().skip(i % 50).take(16).map(String::as_str).collect();
                        anyhow::ensure!(client.query_valid_paths(&batch).await?.len() == batch.len());
                    }
                    8 => {
                        let got: BTreeSet<String> = client
                            .call(&snix_lower_store::protocol::request::QueryReferrers { path: p.clone() })
                            .await?
                            .into_iter()
                            .collect();
                        anyhow::ensure!(
                            got == want[p].referrers,
                            "QueryReferrers {p}: got {got:?}, the fixture says {:?}",
                            want[p].referrers
                        );
                    }
                    _ => {
                        let info = client
                            .query_path_info(p)
                            .await?
                            .ok_or_else(|| anyhow::anyhow!("{p} not valid"))?;
                        anyhow::ensure!(
                            info.nar_hash == want[p].nar_hash,
                            "QueryPathInfo {p}: narHash {} but the fixture imported {}",
                            info.nar_hash,
                            want[p].nar_hash
                        );
                        let nar = client.nar_from_path(p, info.nar_size).await?;
                        let got = hex_encode(&Sha256::digest(&nar));
                        anyhow::ensure!(
                            got == info.nar_hash,
                            "NarFromPath {p}: the NAR hashes to {got}, its narHash is {}",
                            info.nar_hash
                        );
                    }
                }
            }
            anyhow::Ok(())
        }));
    }
    let mut errors = 0;
    for t in tasks {
        if let Err(e) = t.await? {
            errors += 1;
            eprintln!("error: {e}");
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.0.id()))?;
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("VmHWM: ?")
        .to_owned();
    drop(daemon);
    let panics: Vec<String> = std::fs::read_to_string(&log)?
        .lines()
        .filter(|l| l.contains(PANIC_MARKER) || l.contains("panicked at"))
        .map(str::to_owned)
        .collect();
    for l in &panics {
        eprintln!("daemon panic: {l}");
    }
    let total = conns * reqs;
    println!(
        "loadtest: {conns} connections x {reqs} requests = {total} in {secs:.2}s ({:.0} requests/s), {errors} errors; daemon {hwm}",
        total as f64 / secs
    );
    anyhow::ensure!(panics.is_empty(), "the daemon logged {} panic line(s)", panics.len());
    anyhow::ensure!(errors == 0, "{errors} connections failed");
    Ok(())
}
