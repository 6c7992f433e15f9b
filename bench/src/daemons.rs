//! The two daemons under test, started on a generated store: ours
//! (`snix-lower-store serve`, optionally on an image's own index) and Nix's
//! `nix-daemon` in the chroot, optionally under `perf stat`; and the two ways
//! of filling their metadata (our `import`, Nix's `--load-db`), timed.
//!
//! Invariants: a `Daemon` is returned only once its socket accepts a
//! connection, and dropping it stops the process (SIGTERM, then SIGKILL
//! after 5 s) and removes the socket.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use snix_lower_store_bench::gen::Store;
use snix_lower_store_bench::procfs;

use crate::env::{sh_ok, Env};

#[allow(dead_code)]
pub(crate) struct Daemon {
    pub(crate) name: &'static str,
    pub(crate) socket: PathBuf,
    pub(crate) child: Child,
    pub(crate) log: PathBuf,
    /// The daemon's pid: the child, or under `perf stat` the child's child.
    pub(crate) target: u32,
}

impl Daemon {
    pub(crate) fn pid(&self) -> u32 {
        self.target
    }
    pub(crate) fn cpu(&self) -> f64 {
        procfs::cpu_seconds(self.pid()).unwrap_or(f64::NAN)
    }
    pub(crate) fn peak_rss_mib(&self) -> f64 {
        procfs::peak_rss_kib(self.pid()).map_or(f64::NAN, |k| k as f64 / 1024.0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.target as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
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

pub(crate) fn wait_for_socket(
    name: &'static str,
    mut child: Child,
    socket: &Path,
    log: PathBuf,
    wrapped: bool,
) -> Result<Daemon> {
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

pub(crate) fn start_ours(env: &Env, store: &Store, state: &Path) -> Result<Daemon> {
    start_ours_on(env, &store.store_dir(), state, None, None)
}

/// Our daemon on `lower`, answering from `state`'s index, or from `index`
/// (an image's own index, opened read-only) when given; `image_check` is
/// passed as `--image-check` when given (the daemon's default otherwise).
pub(crate) fn start_ours_on(
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

pub(crate) fn start_nix(env: &Env, store: &Store) -> Result<Daemon> {
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
pub(crate) fn perf_wrap(env: &Env, cmd: Command, cleared: bool) -> (Command, bool) {
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
pub(crate) fn import_ours(env: &Env, store: &Store, state: &Path) -> Result<f64> {
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
pub(crate) fn load_db_nix(env: &Env, store: &Store) -> Result<f64> {
    let _ = std::fs::remove_dir_all(store.root.join("nix/var"));
    let url = format!("local?root={}", env.inside(&store.root));
    let t0 = Instant::now();
    sh_ok(
        env.chroot(&["nix-store", "--store", &url, "--load-db"])
            .stdin(std::fs::File::open(&store.registration)?),
    )?;
    Ok(t0.elapsed().as_secs_f64())
}
