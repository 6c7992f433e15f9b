//! Load test of the real binary: C concurrent connections × R mixed requests
//! (QueryPathInfo, IsValidPath, QueryValidPaths, QueryReferrers, NarFromPath)
//! on a generated lower store over a loopback unix socket. Fails on any
//! error; prints throughput and the daemon's peak RSS (VmHWM).
//!
//!   cargo run --release -p snix-lower-store --example loadtest -- [CONNECTIONS] [REQUESTS]

use std::time::Instant;

use snix_lower_store::client::Client;
use snix_lower_store::store::StoreDir;

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
    let mut daemon = std::process::Command::new(&bin)
        .args(["serve", "--log-level", "warn", "--listen"])
        .arg(&sock)
        .arg("--lower-dir")
        .arg(&lower)
        .arg("--state-dir")
        .arg(&state)
        .spawn()?;
    while !sock.exists() {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let paths: Vec<String> = entries.iter().map(|e| sd.display(&e.path)).collect();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..conns {
        let sock = sock.clone();
        let paths = paths.clone();
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
                        client.path_set_op(6, p).await?;
                    }
                    _ => {
                        let info = client.query_path_info(p).await?.unwrap();
                        anyhow::ensure!(client.nar_from_path(p, info.nar_size).await?.len() as u64 == info.nar_size);
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
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.id()))?;
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("VmHWM: ?")
        .to_owned();
    daemon.kill()?;
    let total = conns * reqs;
    println!(
        "loadtest: {conns} connections x {reqs} requests = {total} in {secs:.2}s ({:.0} requests/s), {errors} errors; daemon {hwm}",
        total as f64 / secs
    );
    anyhow::ensure!(errors == 0, "{errors} connections failed");
    Ok(())
}
