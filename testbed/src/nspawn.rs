//! Booting a provisioned root with systemd as PID 1 (systemd-nspawn
//! `--boot --volatile=overlay`) and running commands inside it with nsenter.
//!
//! Invariants: `--volatile=overlay` makes the cached tree the read-only lower
//! layer of an overlay whose upper layer is a tmpfs, so nothing is written to
//! it; the container has no network (`--private-network`); dropping a
//! [`Container`] powers it off (SIGTERM to nspawn, then SIGKILL to its PID 1
//! and to nspawn if it does not stop) and waits for nspawn, so no container
//! outlives its harness.

use crate::cmd::{capture, wait_for, Output};
use anyhow::{bail, Context, Result};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// What to boot: the root, the machine name, and host paths bound read-only.
pub struct Boot<'a> {
    /// Host path of the provisioned root (never written).
    pub root: &'a Path,
    /// Machine name (`--machine=`); unique per run.
    pub machine: String,
    /// `(host path, path inside)` pairs, bound read-only.
    pub binds_ro: Vec<(PathBuf, String)>,
    /// Where nspawn's own output (the console) goes.
    pub log: PathBuf,
    /// Extra environment of systemd-nspawn itself.
    pub nspawn_env: Vec<(String, String)>,
}

/// A booted container; powered off when dropped.
pub struct Container {
    machine: String,
    nspawn: Child,
    leader: u32,
    log: PathBuf,
}

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}

/// The direct children of `pid` (from /proc/*/stat's ppid field).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).ok().and_then(|s| {
                let rest = s.rsplit_once(')')?.1.to_string();
                rest.split_whitespace().nth(1)?.parse::<u32>().ok()
            }) == Some(pid)
        })
        .collect()
}

/// Whether `pid` is PID 1 of a nested PID namespace (its `NSpid:` line has
/// more than one entry and ends in 1).
fn is_container_init(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .is_some_and(|ids| ids.len() > 1 && ids.last() == Some(&"1"))
}

impl Boot<'_> {
    /// The systemd-nspawn command line.
    fn command(&self) -> Result<Command> {
        let log = std::fs::File::create(&self.log).with_context(|| format!("cannot create {}", self.log.display()))?;
        let mut c = Command::new("systemd-nspawn");
        c.args(["--boot", "--quiet", "-D"])
            .arg(self.root)
            .args(["--volatile=overlay", "--register=no", "--keep-unit"])
            .arg(format!("--machine={}", self.machine))
            .args(["--private-network", "--console=pipe"]);
        for (host, inside) in &self.binds_ro {
            let mut arg = std::ffi::OsString::from("--bind-ro=");
            arg.push(host);
            arg.push(":");
            arg.push(inside);
            c.arg(arg);
        }
        c.envs(self.nspawn_env.iter().map(|(k, v)| (k, v)));
        c.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        Ok(c)
    }

    /// Starts the container and finds its PID 1 (within 20 s); does not wait
    /// for the boot to finish (see [`Container::wait_booted`]).
    pub fn start(self) -> Result<Container> {
        let nspawn = self.command()?.spawn().context("cannot start systemd-nspawn")?;
        let mut c = Container {
            machine: self.machine,
            leader: 0,
            nspawn,
            log: self.log,
        };
        let me = c.nspawn.id();
        let found = wait_for(Duration::from_secs(20), Duration::from_millis(200), || {
            let mut cands = children(me);
            cands.extend(cands.clone().into_iter().flat_map(children));
            c.leader = cands.into_iter().find(|p| is_container_init(*p)).unwrap_or(0);
            c.leader != 0
        });
        if !found {
            bail!("no PID 1 found; {}", c.log_tail(5));
        }
        Ok(c)
    }
}

impl Container {
    /// The host PID of the container's PID 1.
    pub fn leader(&self) -> u32 {
        self.leader
    }

    /// The last `lines` lines of nspawn's output.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// A command that runs `args` in the container (all its namespaces, its
    /// root) with a clean environment, killed after `timeout` seconds
    /// (exit status 124 then).
    pub fn command<S: AsRef<OsStr>>(&self, timeout: u64, args: &[S]) -> Command {
        let mut c = Command::new("timeout");
        c.arg(timeout.to_string())
            .args(["nsenter", "-t", &self.leader.to_string(), "-a"])
            .args([
                "env",
                "-i",
                &format!("PATH={}", crate::rootfs::PATH),
                "HOME=/root",
                "LANG=C.UTF-8",
            ])
            .args(args);
        c
    }

    /// Runs `args` in the container; never fails on a non-zero exit.
    pub fn run<S: AsRef<OsStr>>(&self, timeout: u64, args: &[S]) -> Result<Output> {
        let mut out = capture(&mut self.command(timeout, args))?;
        let prefix = format!("timeout {timeout} nsenter -t {} -a env -i ", self.leader);
        out.desc = format!(
            "[{}] {}",
            self.machine,
            out.desc.strip_prefix(&prefix).unwrap_or(&out.desc)
        );
        Ok(out)
    }

    /// Runs a shell snippet in the container.
    pub fn sh(&self, timeout: u64, script: &str) -> Result<Output> {
        self.run(timeout, &["sh", "-c", script])
    }

    /// Waits (up to `limit`) until PID 1 answers `systemctl
    /// is-system-running --wait` with a state other than offline; returns
    /// that state (`running`, `degraded`, ...).
    pub fn wait_booted(&self, limit: Duration) -> String {
        let mut state = String::new();
        wait_for(limit, Duration::from_millis(300), || {
            state = match self.run(60, &["systemctl", "is-system-running", "--wait"]) {
                Ok(o) => o.combined().trim().to_string(),
                Err(e) => format!("{e:#}"),
            };
            !(state.is_empty() || state == "offline" || state.contains("Failed to connect"))
        });
        state
    }

    /// Powers the container off and waits for nspawn (see the module doc).
    fn stop(&mut self) {
        if !alive(self.nspawn.id()) {
            let _ = self.nspawn.wait();
            return;
        }
        // nspawn --boot turns SIGTERM into an orderly poweroff of the container.
        signal(self.nspawn.id(), rustix::process::Signal::TERM);
        let nspawn = self.nspawn.id();
        if !wait_for(Duration::from_secs(15), Duration::from_millis(200), || !alive(nspawn)) {
            // PID 1 may ignore the poweroff request early in boot: killing it
            // ends the container's whole PID namespace, then nspawn exits.
            signal(self.leader, rustix::process::Signal::KILL);
            if !wait_for(Duration::from_secs(5), Duration::from_millis(200), || !alive(nspawn)) {
                let _ = self.nspawn.kill();
            }
        }
        let _ = self.nspawn.wait();
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(Path::new("/run/systemd/nspawn/propagate").join(&self.machine));
    }
}

/// Sends `sig` to `pid`; a process already gone is no error here.
fn signal(pid: u32, sig: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}
