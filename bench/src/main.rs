//! `snix-lower-store-bench`: snix-lower-store against Nix's own daemon on the
//! same generated lower store, driven by the same load through the crate's
//! protocol client. See `--help` and the README's "Performance" section.
//!
//! Runs as root: it re-executes itself in a private mount namespace, binds
//! its work directory, /proc and /dev into a Debian root file system with a
//! real Nix (`.ci/provision-nix-rootfs`) and runs Nix there with chroot.

use anyhow::{bail, Context, Result};
use clap::Parser;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use snix_lower_store::client::Client;
use snix_lower_store::protocol::codec::Wire;
use snix_lower_store::protocol::request::{NarFromPath, QueryPathInfo, QueryReferrers, Request};
use snix_lower_store::protocol::wire::WireBuf;
use snix_lower_store::protocol::ProtoVersion;
use snix_lower_store_bench::gen::{self, Rng, Spec, Store};
use snix_lower_store_bench::procfs;
use snix_lower_store_bench::stats::{median, Samples};

mod startup;

const NS_MARKER: &str = "SNIX_LOWER_STORE_BENCH_IN_NAMESPACE";
/// Where the work directory appears inside the chroot.
const CHROOT_WORK: &str = "/snix-bench";

#[derive(Parser, Clone)]
#[command(
    name = "snix-lower-store-bench",
    about = "snix-lower-store vs Nix's own daemon on the same generated lower store"
)]
struct Args {
    /// Paths in the generated lower store (the default run; also the -qR closure).
    #[arg(long, default_value_t = 22001)]
    paths: usize,
    /// Concurrent client connections of the load phases.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Duration of each load phase.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Reference graph: children per node in the tree.
    #[arg(long, default_value_t = 4)]
    fanout: usize,
    /// Reference graph: extra pseudo-random references per node (to higher nodes).
    #[arg(long, default_value_t = 2)]
    extra_refs: usize,
    /// Op mix of the mixed load, as weights.
    #[arg(long, default_value = "qpi=50,valid=20,batch=10,referrers=10,nar=10")]
    mix: String,
    /// Paths per QueryValidPaths request.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Sequential connections for connect-to-first-answer.
    #[arg(long, default_value_t = 300)]
    connects: usize,
    /// Sequential requests for the one-connection latency and the floor.
    #[arg(long, default_value_t = 20000)]
    sequential: usize,
    /// Timed `nix-store -qR` runs per daemon (after one warm-up).
    #[arg(long, default_value_t = 5)]
    qr_runs: usize,
    /// Daemons to measure: ours, nix, or both.
    #[arg(long, default_value = "ours,nix")]
    daemons: String,
    /// Worker threads of our daemon's tokio runtime (TOKIO_WORKER_THREADS;
    /// default: one per CPU).
    #[arg(long)]
    ours_threads: Option<usize>,
    /// Skip the local-overlay `nix-store -qR` measurement.
    #[arg(long)]
    skip_qr: bool,
    /// Mode: time importing N registration entries, ours vs `nix-store --load-db`.
    #[arg(long, value_name = "N")]
    import_only: Option<usize>,
    /// Mode: index N paths (tiny files), serve the mixed load, report peak RSS.
    #[arg(long, value_name = "N")]
    rss: Option<usize>,
    /// Mode: NarFromPath of one object of this many bytes (e.g. 1073741824).
    #[arg(long, value_name = "BYTES")]
    nar_bytes: Option<u64>,
    /// Mode: instructions (perf stat, user and kernel) per QueryPathInfo and
    /// per connection, from runs of 1 and N+1 requests: load-independent.
    #[arg(long, value_name = "N")]
    instructions: Option<usize>,
    /// Mode: time from "lower mounted" to the first answered QueryPathInfo
    /// for N paths: our import then serve, our daemon on the image's own
    /// index (directory, and erofs where possible), Nix's load-db then
    /// nix-daemon; then each index's size per path.
    #[arg(long, value_name = "N")]
    startup: Option<usize>,
    /// Starts of each way in the start-up mode.
    #[arg(long, default_value_t = 5)]
    startup_runs: usize,
    /// Starts of Nix's way in the start-up mode (default: --startup-runs;
    /// `--load-db` of 1M entries takes minutes).
    #[arg(long)]
    startup_nix_runs: Option<usize>,
    /// Start-up mode: which ways to time (a: import then serve, b: the
    /// image's index in the directory, erofs: mounted erofs image, c: Nix).
    #[arg(long, default_value = "a,b,erofs,c")]
    startup_ways: String,
    /// Start-up mode: `serve --image-check` modes to time the image ways
    /// (b, erofs) with, each in every round (sample, full).
    #[arg(long, default_value = "sample")]
    startup_image_checks: String,
    /// Start-up mode: skip the erofs image (make, mount).
    #[arg(long)]
    skip_erofs: bool,
    /// Mode: size of the generated store of N paths as a directory, erofs
    /// and squashfs images.
    #[arg(long, value_name = "N")]
    image_sizes: Option<usize>,
    /// `--rss`: serve the image's own index (built into the generated
    /// store, opened immutable) instead of a state-dir import.
    #[arg(long)]
    image_index: bool,
    /// Debian suite whose Nix is the baseline (trixie: 2.26, sid: 2.34).
    #[arg(long, default_value = "sid")]
    suite: String,
    #[arg(long, default_value = "/var/cache/snix-lower-store/rootfs")]
    rootfs_cache: PathBuf,
    /// Work directory (generated stores are kept there and reused).
    #[arg(long, default_value = "/var/tmp/snix-lower-store-bench")]
    work: PathBuf,
    /// The snix-lower-store binary (default: next to this one).
    #[arg(long)]
    daemon: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    if std::env::var_os(NS_MARKER).is_none() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("snix-lower-store-bench must run as root (chroot, mounts)");
            std::process::exit(2);
        }
        let me = std::env::current_exe().expect("current exe");
        let err = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--"])
            .arg(me)
            .args(std::env::args_os().skip(1))
            .env(NS_MARKER, "1")
            .exec();
        eprintln!("cannot re-execute under unshare: {err}");
        std::process::exit(2);
    }
    if let Err(e) = run(args) {
        eprintln!("snix-lower-store-bench: {e:#}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------- environment

struct Env {
    rootfs: PathBuf,
    work: PathBuf,
    ours: PathBuf,
    nix_version: String,
    ours_threads: Option<usize>,
    perf_out: Option<PathBuf>,
    mounts: Vec<PathBuf>,
}

impl Drop for Env {
    fn drop(&mut self) {
        for m in self.mounts.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}

fn sh_ok(cmd: &mut Command) -> Result<std::process::Output> {
    let desc = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("cannot start {desc}"))?;
    if !out.status.success() {
        bail!(
            "{desc} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

impl Env {
    fn new(args: &Args) -> Result<Env> {
        let rootfs = args.rootfs_cache.join(&args.suite);
        if !rootfs.join(".snix-lower-store-ready").exists() {
            bail!("{} is not provisioned; run .ci/provision-nix-rootfs", rootfs.display());
        }
        let ours = match &args.daemon {
            Some(p) => p.clone(),
            None => std::env::current_exe()?.parent().unwrap().join("snix-lower-store"),
        };
        if !ours.exists() {
            bail!(
                "{} does not exist: cargo build --release -p snix-lower-store",
                ours.display()
            );
        }
        std::fs::create_dir_all(&args.work)?;
        std::fs::create_dir_all(args.work.join("run"))?;
        let mut env = Env {
            rootfs: rootfs.clone(),
            work: args.work.canonicalize()?,
            ours,
            nix_version: String::new(),
            ours_threads: args.ours_threads,
            perf_out: None,
            mounts: vec![],
        };
        for (src, dst) in [
            (PathBuf::from("/proc"), "proc"),
            (PathBuf::from("/dev"), "dev"),
            (env.work.clone(), &CHROOT_WORK[1..]),
        ] {
            let target = rootfs.join(dst);
            std::fs::create_dir_all(&target)?;
            sh_ok(Command::new("mount").arg("--bind").arg(&src).arg(&target))?;
            env.mounts.push(target);
        }
        let v = sh_ok(&mut env.chroot(&["nix-store", "--version"]))?;
        env.nix_version = String::from_utf8_lossy(&v.stdout).trim().to_string();
        Ok(env)
    }

    /// Path inside the chroot of a host path under the work directory.
    fn inside(&self, host: &Path) -> String {
        let rel = host
            .strip_prefix(&self.work)
            .unwrap_or_else(|_| panic!("{} not under the work dir", host.display()));
        format!("{CHROOT_WORK}/{}", rel.display())
    }

    fn chroot(&self, args: &[&str]) -> Command {
        let mut c = Command::new("chroot");
        c.arg(&self.rootfs).args(args);
        c.env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", "/root")
            .env("TMPDIR", "/tmp")
            .env("LANG", "C.UTF-8")
            .env("LIBMOUNT_FORCE_MOUNT2", "always")
            .env("NIX_CONFIG", "substituters =\nwarn-dirty = false\n");
        c
    }

    fn mount_tmpfs(&mut self, target: &Path) -> Result<()> {
        std::fs::create_dir_all(target)?;
        sh_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=2g,mode=0755", "tmpfs"])
                .arg(target),
        )?;
        self.mounts.push(target.to_path_buf());
        Ok(())
    }

    fn umount_last(&mut self) {
        if let Some(m) = self.mounts.pop() {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
    }
}

// ---------------------------------------------------------------- daemons

#[allow(dead_code)]
struct Daemon {
    name: &'static str,
    socket: PathBuf,
    child: Child,
    log: PathBuf,
    /// The daemon's pid: the child, or under `perf stat` the child's child.
    target: u32,
}

impl Daemon {
    fn pid(&self) -> u32 {
        self.target
    }
    fn cpu(&self) -> f64 {
        procfs::cpu_seconds(self.pid()).unwrap_or(f64::NAN)
    }
    fn peak_rss_mib(&self) -> f64 {
        procfs::peak_rss_kib(self.pid()).map_or(f64::NAN, |k| k as f64 / 1024.0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        unsafe { libc::kill(self.target as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_file(&self.socket);
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn wait_for_socket(name: &'static str, mut child: Child, socket: &Path, log: PathBuf, wrapped: bool) -> Result<Daemon> {
    let t0 = Instant::now();
    loop {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            let target = if wrapped {
                *procfs::children(child.id()).first().context("perf stat has no child")?
            } else {
                child.id()
            };
            return Ok(Daemon {
                name,
                socket: socket.to_path_buf(),
                child,
                log,
                target,
            });
        }
        if let Ok(Some(st)) = child.try_wait() {
            bail!(
                "{name} exited ({st}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        if t0.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            bail!("{name} did not listen on {} within 30s", socket.display());
        }
        // Fine-grained: the start-up mode times a daemon that listens in milliseconds.
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn start_ours(env: &Env, store: &Store, state: &Path) -> Result<Daemon> {
    start_ours_on(env, &store.store_dir(), state, None, None)
}

/// Our daemon on `lower`, answering from `state`'s index, or from `index`
/// (an image's own index, opened read-only) when given; `image_check` is
/// passed as `--image-check` when given (the daemon's default otherwise).
fn start_ours_on(
    env: &Env,
    lower: &Path,
    state: &Path,
    index: Option<&Path>,
    image_check: Option<&str>,
) -> Result<Daemon> {
    let socket = env.work.join("run/ours.sock");
    let _ = std::fs::remove_file(&socket);
    let log = env.work.join("run/ours.log");
    let mut cmd = Command::new(&env.ours);
    if let Some(n) = env.ours_threads {
        cmd.env("TOKIO_WORKER_THREADS", n.to_string());
    }
    cmd.arg("serve")
        .arg("--listen")
        .arg(&socket)
        .arg("--lower-dir")
        .arg(lower)
        .arg("--state-dir")
        .arg(state)
        .arg("--log-target")
        .arg("stderr");
    if let Some(f) = index {
        cmd.arg("--index").arg(f);
    }
    if let Some(c) = image_check {
        cmd.arg("--image-check").arg(c);
    }
    let (mut cmd, wrapped) = perf_wrap(env, cmd, false);
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting snix-lower-store serve")?;
    wait_for_socket("ours", child, &socket, log, wrapped)
}

fn start_nix(env: &Env, store: &Store) -> Result<Daemon> {
    let socket = env.work.join("run/nix.sock");
    let _ = std::fs::remove_file(&socket);
    let log = env.work.join("run/nix-daemon.log");
    let url = format!("local?root={}", env.inside(&store.root));
    let mut cmd = env.chroot(&["nix-daemon", "--store", &url]);
    cmd.env("NIX_DAEMON_SOCKET_PATH", env.inside(&socket));
    let (mut cmd, wrapped) = perf_wrap(env, cmd, true);
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting nix-daemon")?;
    wait_for_socket("nix-daemon", child, &socket, log, wrapped)
}

/// Under `--instructions`, run the daemon under `perf stat` (which counts
/// its forked workers too) writing to `env.perf_out`.
fn perf_wrap(env: &Env, cmd: Command, cleared: bool) -> (Command, bool) {
    let Some(out) = &env.perf_out else { return (cmd, false) };
    let mut p = Command::new("perf");
    p.args(["stat", "-e", "instructions:u,instructions:k", "-x,", "-o"])
        .arg(out)
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    if cleared {
        p.env_clear();
    }
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            p.env(k, v);
        }
    }
    (p, true)
}

/// `snix-lower-store import` of the store's registration into a fresh state dir; wall seconds.
fn import_ours(env: &Env, store: &Store, state: &Path) -> Result<f64> {
    let _ = std::fs::remove_dir_all(state);
    std::fs::create_dir_all(state)?;
    let t0 = Instant::now();
    sh_ok(
        Command::new(&env.ours)
            .arg("import")
            .arg("--registration")
            .arg(&store.registration)
            .arg("--lower-dir")
            .arg(store.store_dir())
            .arg("--state-dir")
            .arg(state)
            .arg("--log-target")
            .arg("stderr"),
    )?;
    Ok(t0.elapsed().as_secs_f64())
}

/// `nix-store --load-db` of the registration into a fresh Nix database at
/// the store's root; wall seconds.
fn load_db_nix(env: &Env, store: &Store) -> Result<f64> {
    let _ = std::fs::remove_dir_all(store.root.join("nix/var"));
    let url = format!("local?root={}", env.inside(&store.root));
    let t0 = Instant::now();
    sh_ok(
        env.chroot(&["nix-store", "--store", &url, "--load-db"])
            .stdin(std::fs::File::open(&store.registration)?),
    )?;
    Ok(t0.elapsed().as_secs_f64())
}

// ---------------------------------------------------------------- load

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpKind {
    Qpi,
    Valid,
    Batch,
    Referrers,
    Nar,
}
const OPS: [OpKind; 5] = [
    OpKind::Qpi,
    OpKind::Valid,
    OpKind::Batch,
    OpKind::Referrers,
    OpKind::Nar,
];

#[derive(Clone)]
struct Mix(Vec<(OpKind, u32)>);

impl Mix {
    fn parse(s: &str) -> Result<Mix> {
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
    fn pick(&self, rng: &mut Rng) -> OpKind {
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
struct LoadResult {
    ops: u64,
    elapsed: f64,
    all: Samples,
    by_op: Vec<(OpKind, Samples)>,
    errors: u64,
    daemon_cpu: f64,
    client_cpu: f64,
}

impl LoadResult {
    fn ops_per_s(&self) -> f64 {
        self.ops as f64 / self.elapsed
    }
}

async fn one_op(
    c: &mut Client,
    op: OpKind,
    paths: &[(String, u64)],
    rng: &mut Rng,
    batch: usize,
) -> snix_lower_store::client::Result<()> {
    let (p, size) = &paths[rng.below(paths.len())];
    match op {
        OpKind::Qpi => {
            c.query_path_info(p)
                .await?
                .ok_or_else(|| snix_lower_store::client::ClientError::Unexpected(format!("{p} not valid")))?;
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

fn client_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// `conns` connections, each issuing ops from `mix` back to back for `secs`.
fn run_load(
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
                                snix_lower_store::client::ClientError::Io(_)
                                    | snix_lower_store::client::ClientError::Protocol(_)
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
fn connect_latency(d: &Daemon, paths: &[(String, u64)], n: usize) -> Result<Samples> {
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
fn parity(a: &Daemon, b: &Daemon, paths: &[(String, u64)], n: usize) -> Result<(usize, usize)> {
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
fn sequential_qpi(d: &Daemon, paths: &[(String, u64)], n: usize) -> Result<Samples> {
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
fn echo_floor(work: &Path, n: usize) -> Result<Samples> {
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

// ---------------------------------------------------------------- local-overlay -qR

/// The local-overlay store URL with daemon `name` (listening on `socket`)
/// as the lower store and `upper` (inside the chroot) as the upper layer.
fn qr_url(env: &Env, store: &Store, name: &str, socket: &Path, upper: &str) -> Result<String> {
    if name == "ours" {
        let out = sh_ok(
            Command::new(&env.ours)
                .arg("store-url")
                .arg("--socket")
                .arg(env.inside(socket))
                .arg("--lower-dir")
                .arg(env.inside(&store.store_dir()))
                .arg("--upper-layer")
                .arg(upper),
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        let lower = format!("unix://{}?real={}", env.inside(socket), env.inside(&store.store_dir()));
        Ok(format!(
            "local-overlay://?lower-store={}&upper-layer={}&check-mount=true",
            enc(&lower),
            enc(upper)
        ))
    }
}

/// Builds a daemon's local-overlay URL from the upper layer's path.
type UrlOf<'a> = dyn Fn(&Env, &str) -> Result<String> + 'a;

/// Mount the overlay at the chroot's /nix/store over `store`'s objects once
/// and time `nix-store -qR` of the whole closure through each daemon as the
/// lower store, interleaved (a, b, a, b, …): one untimed warm-up run each,
/// then `runs` timed runs each. Returns each daemon's run times.
fn time_qr(env: &mut Env, store: &Store, daemons: &[(&str, Box<UrlOf>)], runs: usize) -> Result<Vec<Vec<f64>>> {
    let nix = env.rootfs.join("nix");
    env.mount_tmpfs(&nix)?;
    let res = (|| {
        std::fs::create_dir_all(nix.join("store"))?;
        std::fs::create_dir_all(nix.join("var/nix/gcroots"))?;
        let ov = env.work.join("ov-qr");
        let _ = std::fs::remove_dir_all(&ov);
        std::fs::create_dir_all(ov.join("upper"))?;
        std::fs::create_dir_all(ov.join("work"))?;
        let upper = env.inside(&ov.join("upper"));
        let opts = format!(
            "lowerdir={},upperdir={upper},workdir={}",
            env.inside(&store.store_dir()),
            env.inside(&ov.join("work"))
        );
        sh_ok(&mut env.chroot(&["mount", "-t", "overlay", "overlay", "-o", &opts, "/nix/store"]))?;
        let r = (|| {
            let urls = daemons
                .iter()
                .map(|(_, f)| f(env, &upper))
                .collect::<Result<Vec<_>>>()?;
            let mut times = vec![Vec::new(); daemons.len()];
            for i in 0..=runs {
                for (k, url) in urls.iter().enumerate() {
                    let t0 = Instant::now();
                    let out = sh_ok(&mut env.chroot(&["nix-store", "--store", url, "-qR", store.closure_root()]))?;
                    let dt = t0.elapsed().as_secs_f64();
                    let lines = out.stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count();
                    if lines != store.paths.len() {
                        bail!(
                            "{}: nix-store -qR printed {lines} paths, expected {}",
                            daemons[k].0,
                            store.paths.len()
                        );
                    }
                    if i > 0 {
                        times[k].push(dt);
                    }
                }
            }
            Ok(times)
        })();
        let _ = Command::new("umount").arg("-l").arg(nix.join("store")).status();
        let _ = std::fs::remove_dir_all(&ov);
        r
    })();
    env.umount_last();
    res
}

fn enc(s: &str) -> String {
    snix_lower_store::overlay_url::encode(s)
}

// ---------------------------------------------------------------- modes

fn run(args: Args) -> Result<()> {
    let mix = Mix::parse(&args.mix)?;
    let mut env = Env::new(&args)?;
    print_machine(&env);
    if let Some(n) = args.import_only {
        return mode_import(&env, &args, n);
    }
    if let Some(n) = args.startup {
        return startup::mode_startup(&env, &args, n);
    }
    if let Some(n) = args.image_sizes {
        return startup::mode_image_sizes(&env, &args, n);
    }
    if let Some(n) = args.rss {
        return mode_rss(&env, &args, n, &mix);
    }
    if let Some(b) = args.nar_bytes {
        return mode_nar(&env, b);
    }
    if let Some(n) = args.instructions {
        return mode_instructions(&mut env, &args, n);
    }
    mode_compare(&mut env, &args, &mix)
}

fn print_machine(env: &Env) {
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

fn spec(args: &Args, n: usize, tiny: bool) -> Spec {
    Spec {
        n,
        fanout: args.fanout,
        extra_refs: args.extra_refs,
        tiny,
    }
}

fn gen_store(env: &Env, s: &Spec) -> Result<Store> {
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

fn mode_import(env: &Env, args: &Args, n: usize) -> Result<()> {
    let store = gen_store(env, &spec(args, n, true))?;
    let refs: usize = std::fs::read_to_string(&store.registration)
        .map(|s| s.lines().count())
        .unwrap_or(0)
        .saturating_sub(5 * n);
    println!(
        "# registration {} ({n} entries, {refs} references)",
        store.registration.display()
    );
    let state = env.work.join("run/import-state");
    let ours = import_ours(env, &store, &state)?;
    let nix = load_db_nix(env, &store)?;
    println!("{:<44} {:>12} {:>12} {:>10}", "import", "ours", "nix", "nix/ours");
    println!(
        "{:<44} {:>11.2}s {:>11.2}s {:>9.2}x",
        format!("{n} registration entries (wall)"),
        ours,
        nix,
        nix / ours
    );
    let _ = std::fs::remove_dir_all(&state);
    Ok(())
}

fn mode_rss(env: &Env, args: &Args, n: usize, mix: &Mix) -> Result<()> {
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

fn mode_nar(env: &Env, bytes: u64) -> Result<()> {
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

/// (user, kernel) instructions counted by `perf stat -x,` in `file`.
fn read_perf(file: &Path) -> Result<(f64, f64)> {
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

fn mode_instructions(env: &mut Env, args: &Args, n: usize) -> Result<()> {
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

fn report_load(title: &str, rows: &[(&str, &Daemon, &LoadResult)]) {
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

/// Sum of the RSS of a daemon's children (Nix's per-connection workers).
fn children_rss_mib(pid: u32) -> f64 {
    procfs::children(pid)
        .iter()
        .filter_map(|&c| procfs::status_kib(c, "VmRSS"))
        .sum::<u64>() as f64
        / 1024.0
}

/// Samples the children's total RSS every 100 ms while `f` runs; returns the peak.
fn with_children_rss<T>(pid: u32, f: impl FnOnce() -> T) -> (T, f64) {
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

struct PerDaemon {
    name: &'static str,
    seq_p50: f64,
    conn: Samples,
    qpi: LoadResult,
    mix: LoadResult,
    rss: f64,
    workers_rss: f64,
    qr: Option<(f64, Vec<f64>)>,
}

fn mode_compare(env: &mut Env, args: &Args, mix: &Mix) -> Result<()> {
    let which: Vec<&str> = args.daemons.split(',').collect();
    let store = gen_store(env, &spec(args, args.paths, false))?;
    let state = env
        .work
        .join(format!("stores/{}-ours-state", spec(args, args.paths, false).key()));
    let t_ours = import_ours(env, &store, &state)?;
    let t_nix = load_db_nix(env, &store)?;
    println!("# metadata: ours import {t_ours:.2}s, nix-store --load-db {t_nix:.2}s");
    let paths = Arc::new(store.paths.clone());
    let qpi = Mix(vec![(OpKind::Qpi, 1)]);

    let mut floor = echo_floor(&env.work, args.sequential)?;
    let mut daemons = Vec::new();
    if which.contains(&"ours") {
        daemons.push(start_ours(env, &store, &state)?);
    }
    if which.contains(&"nix") {
        daemons.push(start_nix(env, &store)?);
    }
    if daemons.len() == 2 {
        let (n, proved) = parity(&daemons[0], &daemons[1], &paths, 500)?;
        println!(
            "# parity: QueryPathInfo of {n} sampled paths identical from both daemons (registration time aside; \
             {proved} content addresses that ours proved at import and --load-db lacks)"
        );
    }
    let mut per: Vec<PerDaemon> = Vec::new();
    for d in &daemons {
        println!("# {}: measuring (load average {})", d.name, loadavg());
        let mut seq = sequential_qpi(d, &paths, args.sequential)?;
        let conn = connect_latency(d, &paths, args.connects)?;
        let (q, workers_rss) = with_children_rss(d.pid(), || {
            run_load(d, &paths, args.connections, args.seconds, &qpi, args.batch)
        });
        let q = q?;
        let m = run_load(d, &paths, args.connections, args.seconds, mix, args.batch)?;
        per.push(PerDaemon {
            name: d.name,
            seq_p50: seq.p50(),
            conn,
            qpi: q,
            mix: m,
            rss: d.peak_rss_mib(),
            workers_rss,
            qr: None,
        });
    }
    let rows: Vec<(&str, &Daemon, &LoadResult)> = per.iter().zip(&daemons).map(|(p, d)| (p.name, d, &p.qpi)).collect();
    report_load(
        &format!(
            "QueryPathInfo only, {} connections, {}s",
            args.connections, args.seconds
        ),
        &rows,
    );
    let rows: Vec<(&str, &Daemon, &LoadResult)> = per.iter().zip(&daemons).map(|(p, d)| (p.name, d, &p.mix)).collect();
    report_load(
        &format!("mix {}, {} connections, {}s", args.mix, args.connections, args.seconds),
        &rows,
    );

    if !args.skip_qr {
        let st = &store;
        let urls = daemons
            .iter()
            .map(|d| {
                let (name, socket) = (d.name, d.socket.clone());
                let f: Box<UrlOf> = Box::new(move |env: &Env, upper: &str| qr_url(env, st, name, &socket, upper));
                (name, f)
            })
            .collect::<Vec<_>>();
        let all = time_qr(env, &store, &urls, args.qr_runs)?;
        for (p, times) in per.iter_mut().zip(all) {
            println!("# {}: nix-store -qR runs {:.3?}", p.name, times);
            p.qr = Some((median(times.clone()), times));
        }
    }

    // Summary, as a markdown table.
    let f = floor.p50();
    println!();
    println!(
        "## summary: {} paths, {} connections, {}s per load, {}",
        store.paths.len(),
        args.connections,
        args.seconds,
        env.nix_version
    );
    let names: Vec<&str> = per.iter().map(|p| p.name).collect();
    println!("| measure | {} | ours/nix |", names.join(" | "));
    println!("|---|{}---|", "---|".repeat(names.len()));
    let ratio = |v: &[f64]| {
        if v.len() == 2 {
            format!("{:.3}", v[0] / v[1])
        } else {
            "-".into()
        }
    };
    let row = |label: &str, v: Vec<f64>, fmt: &dyn Fn(f64) -> String| {
        println!(
            "| {label} | {} | {} |",
            v.iter().map(|x| fmt(*x)).collect::<Vec<_>>().join(" | "),
            ratio(&v)
        );
    };
    let us = |x: f64| format!("{x:.0} µs");
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
    row("peak RSS (VmHWM)", per.iter().map(|p| p.rss).collect(), &|x| {
        format!("{x:.1} MiB")
    });
    row(
        "workers' RSS (sum, during the QPI load)",
        per.iter().map(|p| p.workers_rss).collect(),
        &|x| format!("{x:.1} MiB"),
    );
    if per.iter().all(|p| p.qr.is_some()) {
        row(
            &format!(
                "local-overlay nix-store -qR, {} paths (median of {}, interleaved, after one warm-up each)",
                store.paths.len(),
                args.qr_runs
            ),
            per.iter().map(|p| p.qr.as_ref().unwrap().0).collect(),
            &|x| format!("{x:.3} s"),
        );
        row(
            "… min",
            per.iter()
                .map(|p| p.qr.as_ref().unwrap().1.iter().copied().fold(f64::INFINITY, f64::min))
                .collect(),
            &|x| format!("{x:.3} s"),
        );
    }
    println!("| echo floor p50 (p99) | {:.1} µs ({:.1} µs) | | |", f, floor.p99());
    println!("# load average at the end: {}", loadavg());
    Ok(())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}
