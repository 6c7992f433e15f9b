//! Load test of the real binary: C concurrent connections × R mixed requests
//! (QueryPathInfo, IsValidPath, QueryValidPaths, QueryReferrers, NarFromPath)
//! on a generated lower store over a loopback unix socket, about paths that
//! are valid and paths that are not (a valid path's hash part with another
//! name, and a valid name under another hash part). Every answer is checked
//! against the fixture: validity and path info exactly, QueryValidPaths as
//! the set of the batch's valid paths, QueryReferrers as exactly the paths
//! that reference the path (none for a path that is not valid), and each NAR
//! hashes to the path's narHash from QueryPathInfo, which is the hash the
//! fixture imported. The daemon answers from its in-memory key directory
//! (its default): requests start only once its STATUS= (read on a
//! NOTIFY_SOCKET of our own) says the directory holds every path, and the
//! run fails unless STATUS then counts reader snapshots answered from the
//! directory and none from SQLite. Fails on any error, on a daemon that does
//! not listen within `SOCKET_WAIT`, and on any panic line in the daemon's
//! log; prints throughput and the daemon's peak RSS (VmHWM).
//!
//!   cargo run --release -p snix-lower-store --example loadtest -- [CONNECTIONS] [REQUESTS]

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use snix_lower_store::panics::PANIC_MARKER;
use snix_lower_store_testkit::client::Client;
use snix_lower_store_types::hash::hex_encode;
use snix_lower_store_types::StoreDir;

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

/// Paths that are not valid: each valid path's hash part with another
/// name, and its name under a hash part changed in its first character.
fn not_valid(sd: &StoreDir, entries: &[snix_lower_store_types::path_info::PathInfo]) -> Vec<String> {
    let mut out = Vec::new();
    for e in entries {
        let (hash, name) = (e.path.hash_part(), &e.path.base_name()[33..]);
        let other = if hash.starts_with('0') { '1' } else { '0' };
        out.push(format!("{}/{hash}-not-indexed", sd.as_str()));
        out.push(format!("{}/{other}{}-{name}", sd.as_str(), &hash[1..]));
    }
    let valid: BTreeSet<String> = entries.iter().map(|e| sd.display(&e.path)).collect();
    out.retain(|p| !valid.contains(p));
    out
}

/// The last STATUS= the daemon sent to our NOTIFY_SOCKET once `want` holds
/// for it, or an error after `SOCKET_WAIT` (it is refreshed every 2 s).
fn status_where(
    notify: &std::os::unix::net::UnixDatagram,
    last: &mut String,
    want: impl Fn(&str) -> bool,
) -> anyhow::Result<String> {
    let t0 = Instant::now();
    let mut buf = vec![0u8; 4096];
    while !want(last) {
        anyhow::ensure!(
            t0.elapsed() < SOCKET_WAIT,
            "no fitting STATUS= within {SOCKET_WAIT:?}; last: {last:?}"
        );
        if let Ok(n) = notify.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]);
            if let Some(s) = msg.lines().find_map(|l| l.strip_prefix("STATUS=")) {
                *last = s.to_owned();
            }
        }
    }
    Ok(last.clone())
}

/// Reader snapshots answered from the key directory and from SQLite, as
/// the STATUS line counts them.
fn snapshot_counts(status: &str) -> Option<(u64, u64)> {
    let (head, tail) = status.split_once(" reader snapshots answered from it, ")?;
    let from_it = head.rsplit_once(' ')?.1.parse().ok()?;
    let from_sqlite = tail.strip_suffix(" from SQLite")?.parse().ok()?;
    Some((from_it, from_sqlite))
}

/// What the fixture says each path must answer.
struct Expected {
    /// Base16 NAR hash, as QueryPathInfo sends it.
    nar_hash: String,
    /// Full paths of the paths referencing it.
    referrers: BTreeSet<String>,
}

fn expected(sd: &StoreDir, entries: &[snix_lower_store_types::path_info::PathInfo]) -> HashMap<String, Expected> {
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

/// The fixture's answers, shared by the connections: the valid paths, paths
/// that are not valid, and what each valid path must answer.
struct Fixture {
    paths: Vec<String>,
    absent: Vec<String>,
    want: HashMap<String, Expected>,
}

/// `snix-lower-store import` of the registration into `state`.
fn import(
    bin: &std::path::Path,
    reg: &std::path::Path,
    lower: &std::path::Path,
    state: &std::path::Path,
) -> anyhow::Result<()> {
    let ok = std::process::Command::new(bin)
        .args(["import", "--registration"])
        .arg(reg)
        .arg("--lower-dir")
        .arg(lower)
        .arg("--state-dir")
        .arg(state)
        .stdout(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(ok.success(), "import failed");
    Ok(())
}

/// `snix-lower-store serve` on `sock`, logging to `log`, sending its
/// notifications to `notify`.
fn serve(
    bin: &std::path::Path,
    sock: &std::path::Path,
    lower: &std::path::Path,
    state: &std::path::Path,
    notify: &std::path::Path,
    log: &std::path::Path,
) -> anyhow::Result<KillOnDrop> {
    Ok(KillOnDrop(
        std::process::Command::new(bin)
            .args(["serve", "--log-level", "warn", "--log-target", "stderr", "--listen"])
            .arg(sock)
            .arg("--lower-dir")
            .arg(lower)
            .arg("--state-dir")
            .arg(state)
            .env("NOTIFY_SOCKET", notify)
            .stderr(std::fs::File::create(log)?)
            .spawn()?,
    ))
}

/// Connection `c`: `reqs` requests in the fixed mix, each answer checked.
async fn connection(c: usize, reqs: usize, sock: std::path::PathBuf, fx: Arc<Fixture>) -> anyhow::Result<()> {
    let (paths, absent) = (&fx.paths, &fx.absent);
    let mut client = Client::connect(&sock, 38).await?;
    for i in 0..reqs {
        let p = &paths[(c * 7919 + i * 104729) % paths.len()];
        let q = &absent[(c * 104729 + i * 7919) % absent.len()];
        match i % 10 {
            0..=3 => anyhow::ensure!(client.query_path_info(p).await?.is_some(), "{p} not valid"),
            4 => anyhow::ensure!(
                client.query_path_info(q).await?.is_none(),
                "QueryPathInfo {q}: an answer"
            ),
            5 => anyhow::ensure!(client.is_valid_path(p).await?, "{p} not valid"),
            6 => anyhow::ensure!(!client.is_valid_path(q).await?, "IsValidPath {q}: valid"),
            7 => valid_paths(&mut client, &fx, i).await?,
            8 => {
                // Every fourth about a path that is not valid: none.
                let (asked, referrers) = match i % 40 {
                    8 => (q, BTreeSet::new()),
                    _ => (p, fx.want[p].referrers.clone()),
                };
                referrers_are(&mut client, asked, referrers).await?;
            }
            _ => nar_matches(&mut client, &fx, p).await?,
        }
    }
    Ok(())
}

/// QueryValidPaths of valid and not valid paths, interleaved: exactly the
/// valid ones.
async fn valid_paths(client: &mut Client, fx: &Fixture, i: usize) -> anyhow::Result<()> {
    let mut batch: Vec<&str> = Vec::new();
    for k in 0..16 {
        batch.push(&fx.paths[(i + k * 13) % fx.paths.len()]);
        batch.push(&fx.absent[(i + k * 17) % fx.absent.len()]);
    }
    let got: BTreeSet<String> = client.query_valid_paths(&batch).await?.into_iter().collect();
    let valid: BTreeSet<String> = batch
        .iter()
        .copied()
        .filter(|b| fx.want.contains_key(*b))
        .map(str::to_owned)
        .collect();
    anyhow::ensure!(got == valid, "QueryValidPaths: got {got:?}, the fixture says {valid:?}");
    Ok(())
}

/// QueryReferrers of `asked`: exactly `referrers`.
async fn referrers_are(client: &mut Client, asked: &str, referrers: BTreeSet<String>) -> anyhow::Result<()> {
    let got: BTreeSet<String> = client
        .call(&snix_lower_store_protocol::request::QueryReferrers { path: asked.to_owned() })
        .await?
        .into_iter()
        .collect();
    anyhow::ensure!(
        got == referrers,
        "QueryReferrers {asked}: got {got:?}, the fixture says {referrers:?}"
    );
    Ok(())
}

/// QueryPathInfo of `p` gives the narHash the fixture imported, and its
/// NAR from NarFromPath hashes to it.
async fn nar_matches(client: &mut Client, fx: &Fixture, p: &str) -> anyhow::Result<()> {
    let info = client
        .query_path_info(p)
        .await?
        .ok_or_else(|| anyhow::anyhow!("{p} not valid"))?;
    anyhow::ensure!(
        info.nar_hash == fx.want[p].nar_hash,
        "QueryPathInfo {p}: narHash {} but the fixture imported {}",
        info.nar_hash,
        fx.want[p].nar_hash
    );
    let nar = client.nar_from_path(p, info.nar_size).await?;
    let got = hex_encode(&Sha256::digest(&nar));
    anyhow::ensure!(
        got == info.nar_hash,
        "NarFromPath {p}: the NAR hashes to {got}, its narHash is {}",
        info.nar_hash
    );
    Ok(())
}

/// The panic lines of the daemon's log.
fn panic_lines(log: &std::path::Path) -> anyhow::Result<Vec<String>> {
    Ok(std::fs::read_to_string(log)?
        .lines()
        .filter(|l| l.contains(PANIC_MARKER) || l.contains("panicked at"))
        .map(str::to_owned)
        .collect())
}

/// The daemon's VmHWM line.
fn peak_rss(pid: u32) -> anyhow::Result<String> {
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(proc_status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("VmHWM: ?")
        .to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let conns: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(512);
    let reqs: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(2000);
    let dir = tempfile::tempdir()?;
    let sd = StoreDir::new("/nix/store").map_err(anyhow::Error::msg)?;
    let lower = dir.path().join("lower");
    let entries = snix_lower_store_testkit::demo::generate(&lower, &sd, 50, 20)?;
    let reg = dir.path().join("reg");
    std::fs::write(&reg, snix_lower_store_testkit::demo::registration(&sd, &entries))?;
    let bin = std::env::current_exe()?
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("snix-lower-store"))
        .unwrap();
    let state = dir.path().join("state");
    import(&bin, &reg, &lower, &state)?;
    let sock = dir.path().join("sock");
    let log = dir.path().join("daemon.log");
    let notify_path = dir.path().join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path)?;
    notify.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut daemon = serve(&bin, &sock, &lower, &state, &notify_path, &log)?;
    wait_for_socket(&sock, &mut daemon.0, &log).await?;
    let mut status = String::new();
    let built = format!("key directory: {} paths", entries.len());
    status_where(&notify, &mut status, |s| s.contains(&built))?;
    let fx = Arc::new(Fixture {
        paths: entries.iter().map(|e| sd.display(&e.path)).collect(),
        absent: not_valid(&sd, &entries),
        want: expected(&sd, &entries),
    });
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..conns)
        .map(|c| tokio::spawn(connection(c, reqs, sock.clone(), fx.clone())))
        .collect();
    let mut errors = 0;
    for t in tasks {
        if let Err(e) = t.await? {
            errors += 1;
            eprintln!("error: {e}");
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    // The key directory answered: STATUS counts its reader snapshots.
    let last = status_where(&notify, &mut status, |s| {
        snapshot_counts(s).is_some_and(|(from_it, _)| from_it > 0)
    })?;
    let (_, from_sqlite) = snapshot_counts(&last).unwrap_or_default();
    println!("loadtest: daemon STATUS={last}");
    anyhow::ensure!(
        from_sqlite == 0,
        "{from_sqlite} reader snapshots answered from SQLite, not the key directory"
    );
    let hwm = peak_rss(daemon.0.id())?;
    drop(daemon);
    let panics = panic_lines(&log)?;
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
