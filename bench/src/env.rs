//! The environment every mode runs in: a provisioned Debian root with a real
//! Nix, with /proc, /dev and the work directory bind-mounted into it, and
//! commands run there with chroot.
//!
//! Invariants: every mount made here is undone (lazily, in reverse order)
//! when the `Env` is dropped; paths handed to Nix inside the chroot are
//! under the work directory (`Env::inside`).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::args::Args;

/// Where the work directory appears inside the chroot.
pub(crate) const CHROOT_WORK: &str = "/snix-bench";

pub(crate) struct Env {
    pub(crate) rootfs: PathBuf,
    pub(crate) work: PathBuf,
    pub(crate) ours: PathBuf,
    pub(crate) nix_version: String,
    pub(crate) ours_threads: Option<usize>,
    pub(crate) perf_out: Option<PathBuf>,
    pub(crate) mounts: Vec<PathBuf>,
}

impl Drop for Env {
    fn drop(&mut self) {
        for m in self.mounts.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
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
    pub(crate) fn inside(&self, host: &Path) -> String {
        let rel = host
            .strip_prefix(&self.work)
            .unwrap_or_else(|_| panic!("{} not under the work dir", host.display()));
        format!("{CHROOT_WORK}/{}", rel.display())
    }

    pub(crate) fn chroot(&self, args: &[&str]) -> Command {
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

    pub(crate) fn mount_tmpfs(&mut self, target: &Path) -> Result<()> {
        std::fs::create_dir_all(target)?;
        sh_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=2g,mode=0755", "tmpfs"])
                .arg(target),
        )?;
        self.mounts.push(target.to_path_buf());
        Ok(())
    }

    pub(crate) fn umount_last(&mut self) {
        if let Some(m) = self.mounts.pop() {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
    }
}
