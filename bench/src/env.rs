//! The environment every mode runs in: a provisioned Debian root with a real
//! Nix, with /proc, /dev and the work directory bind-mounted into it, and
//! commands run there with chroot.
//!
//! The root, its Nix and the mounts come from the shared test bed
//! (`testbed`), as for the e2e suite.
//!
//! Invariants: every mount made here is undone (lazily, in reverse order)
//! when the `Env` is dropped; paths handed to Nix inside the chroot are
//! under the work directory (`Env::inside`).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

use testbed::mounts::{self, Mounted};
use testbed::rootfs::Rootfs;

use crate::args::Args;

/// The chroot's `NIX_CONFIG`: no substituters.
const NIX_CONFIG: &str = "substituters =\nwarn-dirty = false\n";

/// Where the work directory appears inside the chroot.
pub(crate) const CHROOT_WORK: &str = "/snix-bench";

pub(crate) struct Env {
    pub(crate) rootfs: PathBuf,
    pub(crate) fs: Rootfs,
    pub(crate) work: PathBuf,
    pub(crate) ours: PathBuf,
    pub(crate) nix_version: String,
    pub(crate) ours_threads: Option<usize>,
    pub(crate) perf_out: Option<PathBuf>,
    pub(crate) mounts: Vec<Mounted>,
}

impl Drop for Env {
    fn drop(&mut self) {
        // Last mounted, first unmounted.
        while self.mounts.pop().is_some() {}
    }
}

pub(crate) fn sh_ok(cmd: &mut Command) -> Result<std::process::Output> {
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
    pub(crate) fn new(args: &Args) -> Result<Env> {
        let rootfs = args.rootfs_cache.join(&args.suite);
        let fs = Rootfs::open(&args.suite, &rootfs)?.with_nix_config(NIX_CONFIG);
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
            fs,
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
            env.mounts.push(mounts::bind(&src, &rootfs.join(dst))?);
        }
        env.fs.detect_version()?;
        env.nix_version = env.fs.version_line.clone();
        Ok(env)
    }

    /// Path inside the chroot of a host path under the work directory.
    pub(crate) fn inside(&self, host: &Path) -> String {
        let rel = host
            .strip_prefix(&self.work)
            .unwrap_or_else(|_| panic!("{} not under the work dir", host.display()));
        format!("{CHROOT_WORK}/{}", rel.display())
    }

    pub(crate) fn chroot(&self, args: &[&str]) -> Command {
        self.fs.command(args)
    }

    pub(crate) fn mount_tmpfs(&mut self, target: &Path) -> Result<()> {
        self.mounts.push(mounts::tmpfs(target, "2g")?);
        Ok(())
    }

    pub(crate) fn umount_last(&mut self) {
        // Dropping the guard unmounts (lazily).
        self.mounts.pop();
    }
}
