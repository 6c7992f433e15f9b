//! The load the daemons are measured under, driven through the crate's
//! protocol client: a weighted op mix over many connections, sequential
//! requests on one connection, connect-to-first-answer, the echo floor, the
//! parity check between two daemons, and the load report.
//!
//! Invariants: the clients use a fixed seed per connection, so both daemons
//! see the same request sequence; daemon CPU is read before and after each
//! load (after Nix's workers are reaped).

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use snix_lower_store_bench::gen::Rng;
use snix_lower_store_bench::procfs;
use snix_lower_store_bench::stats::Samples;
use snix_lower_store_protocol::codec::Wire;
use snix_lower_store_protocol::request::{QueryPathInfo, QueryReferrers, Request};
use snix_lower_store_protocol::wire::WireBuf;
use snix_lower_store_protocol::ProtoVersion;
use snix_lower_store_testkit::client::Client;

use crate::daemons::Daemon;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpKind {
    Qpi,
    Valid,
    Batch,
    Referrers,
    Nar,
}
pub(crate) const OPS: [OpKind; 5] = [
    OpKind::Qpi,
    OpKind::Valid,
    OpKind::Batch,
    OpKind::Referrers,
    OpKind::Nar,
];

#[derive(Clone)]
pub(crate) struct Mix(pub(crate) Vec<(OpKind, u32)>);

impl Mix {
    pub(crate) fn parse(s: &str) -> Result<Mix> {
        let mut v = Vec::new();
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (k, w) = part.split_once('=').context("mix entries are op=weight")?;
            let op = match k {
                "qpi" => OpKind::Qpi,
                "valid" => OpKind::Valid,
                "batch" => OpKind::Batch,
                "referrers" => OpKind::Referrers,
                "nar" => OpKind::Nar,
                _ => bail!("unknown op {k:?} in the mix (qpi, valid, batch, referrers, nar)"),
            };
            v.push((op, w.parse()?));
        }
        if v.iter().map(|x| x.1).sum::<u32>() == 0 {
            bail!("the mix has no weight");
        }
        Ok(Mix(v))
    }
    pub(crate) fn pick(&self, rng: &mut Rng) -> OpKind {
        let total: u32 = self.0.iter().map(|x| x.1).sum();
        let mut r = (rng.next_u64() % total as u64) as u32;
        for (op, w) in &self.0 {
            if r < *w {
                return *op;
            }
            r -= w;
        }
        unreachable!()
    }
}

#[derive(Default)]
pub(crate) struct LoadResult {
    pub(crate) ops: u64,
    pub(crate) elapsed: f64,
    pub(crate) all: Samples,
    pub(crate) by_op: Vec<(OpKind, Samples)>,
    pub(crate) errors: u64,
    pub(crate) daemon_cpu: f64,
    pub(crate) client_cpu: f64,
}

impl LoadResult {
    pub(crate) fn ops_per_s(&self) -> f64 {
        self.ops as f64 / self.elapsed
    }
}

pub(crate) async fn one_op(
    c: &mut Client,
    op: OpKind,
    paths: &[(String, u64)],
    rng: &mut Rng,
    batch: usize,
) -> snix_lower_store_testkit::client::Result<()> {
    let (p, size) = &paths[rng.below(paths.len())];
    match op {
        OpKind::Qpi => {
            c.query_path_info(p)
                .await?
                .ok_or_else(|| snix_lower_store_testkit::client::ClientError::Unexpected(format!("{p} not valid")))?;
        }
        OpKind::Valid => {
            c.is_valid_path(p).await?;
        }
        OpKind::Batch => {
            let ps: Vec<&str> = (0..batch).map(|_| paths[rng.below(paths.len())].0.as_str()).collect();
            c.query_valid_paths(&ps).await?;
        }
        OpKind::Referrers => {
            c.call(&QueryReferrers { path: p.clone() }).await?;
        }
        OpKind::Nar => {
            c.nar_from_path(p, *size).await?;
        }
    }
    Ok(())
}

pub(crate) fn client_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// `conns` connections, each issuing ops from `mix` back to back for `secs`.
pub(crate) fn run_load(
    d: &Daemon,
    paths: &Arc<Vec<(String, u64)>>,
    conns: usize,
    secs: f64,
    mix: &Mix,
    batch: usize,
) -> Result<LoadResult> {
    let rt = client_rt();
    let cpu0 = d.cpu();
    let self0 = procfs::self_cpu_seconds();
    let mut res = rt.block_on(async {
        let mut clients = Vec::new();
        for _ in 0..conns {
            clients.push(Client::connect(&d.socket, 38).await?);
        }
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs_f64(secs);
        let mut tasks = Vec::new();
        for (i, mut c) in clients.into_iter().enumerate() {
            let paths = paths.clone();
            let mix = mix.clone();
            tasks.push(tokio::spawn(async move {
                let mut rng = Rng(0x1234_5678 + i as u64 * 7919);
                let mut by: Vec<(OpKind, Samples)> = OPS.iter().map(|&o| (o, Samples::default())).collect();
                let mut errors = 0u64;
                while Instant::now() < deadline {
                    let op = mix.pick(&mut rng);
                    let s = Instant::now();
                    match one_op(&mut c, op, &paths, &mut rng, batch).await {
                        Ok(()) => by.iter_mut().find(|x| x.0 == op).unwrap().1.push(s.elapsed()),
                        Err(e) => {
                            errors += 1;
                            if errors == 1 {
                                eprintln!("  error: {op:?}: {e}");
                            }
                            if matches!(
                                e,
                                snix_lower_store_testkit::client::ClientError::Io(_)
                                    | snix_lower_store_testkit::client::ClientError::Protocol(_)
                            ) {
                                break;
                            }
                        }
                    }
                }
                (by, errors)
            }));
        }
        let mut res = LoadResult {
            by_op: OPS.iter().map(|&o| (o, Samples::default())).collect(),
            ..Default::default()
        };
        for t in tasks {
            let (by, errors) = t.await?;
            res.errors += errors;
            for ((_, dst), (_, src)) in res.by_op.iter_mut().zip(by) {
                dst.extend(src);
            }
        }
        res.elapsed = t0.elapsed().as_secs_f64();
        anyhow::Ok(res)
    })?;
    res.client_cpu = procfs::self_cpu_seconds() - self0;
    // Let Nix's daemon reap its workers so cutime/cstime count them.
    std::thread::sleep(Duration::from_millis(500));
    res.daemon_cpu = d.cpu() - cpu0;
    for (_, s) in &res.by_op {
        res.ops += s.len() as u64;
        res.all.0.extend_from_slice(&s.0);
    }
    Ok(res)
}

/// Connect, handshake, one QueryPathInfo, hang up; `n` times in sequence.
pub(crate) fn connect_latency(d: &Daemon, paths: &[(String, u64)], n: usize) -> Result<Samples> {
    let rt = client_rt();
    rt.block_on(async {
        let mut s = Samples::default();
        let mut rng = Rng(99);
        for _ in 0..n {
            let p = &paths[rng.below(paths.len())].0;
            let t0 = Instant::now();
            let mut c = Client::connect(&d.socket, 38).await?;
            c.query_path_info(p).await?.context("not valid")?;
            s.push(t0.elapsed());
            drop(c);
        }
        Ok(s)
    })
}

/// Both daemons serve the same data: QueryPathInfo of `n` sampled paths
/// agree on everything but the registration time and the content address
/// `a` proved where `b` has none. Returns (n, how many such addresses).
pub(crate) fn parity(a: &Daemon, b: &Daemon, paths: &[(String, u64)], n: usize) -> Result<(usize, usize)> {
    let rt = client_rt();
    rt.block_on(async {
        let mut ca = Client::connect(&a.socket, 38).await?;
        let mut cb = Client::connect(&b.socket, 38).await?;
        let mut rng = Rng(3);
        let mut proved = 0;
        for _ in 0..n {
            let p = &paths[rng.below(paths.len())].0;
            let mut x = ca
                .query_path_info(p)
                .await?
                .with_context(|| format!("{}: {p} not valid", a.name))?;
            let mut y = cb
                .query_path_info(p)
                .await?
                .with_context(|| format!("{}: {p} not valid", b.name))?;
            x.registration_time = 0;
            y.registration_time = 0;
            // Our import proves content addresses a registration lacks;
            // `--load-db` records none.
            if y.ca.is_none() && x.ca.is_some() {
                x.ca = None;
                proved += 1;
            }
            if x != y {
                bail!("{p}: {} says {x:?}, {} says {y:?}", a.name, b.name);
            }
        }
        Ok((n, proved))
    })
}

/// One connection, `n` QueryPathInfo in sequence.
pub(crate) fn sequential_qpi(d: &Daemon, paths: &[(String, u64)], n: usize) -> Result<Samples> {
    let rt = client_rt();
    rt.block_on(async {
        let mut c = Client::connect(&d.socket, 38).await?;
        let mut s = Samples::default();
        let mut rng = Rng(7);
        for _ in 0..n {
            let p = &paths[rng.below(paths.len())].0;
            let t0 = Instant::now();
            c.query_path_info(p).await?.context("not valid")?;
            s.push(t0.elapsed());
        }
        Ok(s)
    })
}

/// The floor: a trivial echo server on the same kind of unix socket (a
/// thread per connection, blocking I/O); the client sends a request the
/// size of a QueryPathInfo request and reads the same bytes back.
pub(crate) fn echo_floor(work: &Path, n: usize) -> Result<Samples> {
    use std::io::{Read, Write};
    let sock = work.join("run/echo.sock");
    let _ = std::fs::remove_file(&sock);
    let l = std::os::unix::net::UnixListener::bind(&sock)?;
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { break };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => {
                            if s.write_all(&buf[..k]).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    let rt = client_rt();
    let r = rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut st = tokio::net::UnixStream::connect(&sock).await?;
        let mut req = WireBuf::new(ProtoVersion::LATEST);
        req.u64(QueryPathInfo::OP as u64);
        let q = QueryPathInfo {
            path: "/nix/store/ffffffffffffffffffffffffffffffff-bench-12345".into(),
        };
        q.encode(&mut req);
        let mut back = vec![0u8; req.0.len()];
        let mut s = Samples::default();
        for _ in 0..n {
            let t0 = Instant::now();
            st.write_all(&req.0).await?;
            st.read_exact(&mut back).await?;
            s.push(t0.elapsed());
        }
        anyhow::Ok(s)
    });
    let _ = std::fs::remove_file(&sock);
    r
}

pub(crate) fn report_load(title: &str, rows: &[(&str, &Daemon, &LoadResult)]) {
    println!("## {title}");
    for (name, d, r) in rows {
        let mut all = r.all.clone();
        println!(
            "{:<11} {:>10.0} ops/s  p50 {:>8.1} us  p99 {:>8.1} us  daemon CPU {:>6.2}s ({:>5.1} us/op)  client CPU {:>5.2}s  peak RSS {:>6.1} MiB  errors {}",
            name,
            r.ops_per_s(),
            all.p50(),
            all.p99(),
            r.daemon_cpu,
            r.daemon_cpu / r.ops as f64 * 1e6,
            r.client_cpu,
            d.peak_rss_mib(),
            r.errors
        );
        for (op, s) in &r.by_op {
            if !s.is_empty() {
                let mut s = s.clone();
                println!(
                    "{:<11}   {:<10} {:>8} ops  p50 {:>8.1} us  p99 {:>8.1} us",
                    "",
                    format!("{op:?}"),
                    s.len(),
                    s.p50(),
                    s.p99()
                );
            }
        }
    }
}
