//! Mounts made by a harness, each undone when its guard is dropped.
//!
//! Harnesses run in a private mount namespace (see [`crate::namespace`]), so
//! even a crash leaves nothing mounted on the host; the guards only keep the
//! namespace tidy between steps. Mounts seen by a chroot's Nix (OverlayFS,
//! erofs, read-only binds) are made from inside the chroot, so the paths in
//! its /proc/self/mounts are the ones Nix compares with its settings.

use crate::cmd::{capture, host};
use crate::rootfs::Rootfs;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A mount point that is unmounted (lazily, so a stray process cannot block
/// it) when dropped.
#[derive(Debug)]
pub struct Mounted {
    target: PathBuf,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = capture(Command::new("umount").arg("-l").arg(&self.target));
    }
}

fn mkdir(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).with_context(|| format!("cannot create {}", p.display()))
}

/// Mounts a fresh tmpfs on `target`.
pub fn tmpfs(target: &Path, size: &str) -> Result<Mounted> {
    mkdir(target)?;
    let opts = format!("size={size},mode=0755");
    host(
        "mount",
        [
            std::ffi::OsStr::new("-t"),
            "tmpfs".as_ref(),
            "-o".as_ref(),
            opts.as_ref(),
            "tmpfs".as_ref(),
            target.as_os_str(),
        ],
    )
    .context("mounting a tmpfs failed")?;
    Ok(Mounted {
        target: target.to_path_buf(),
    })
}

/// Bind-mounts `source` on `target`.
pub fn bind(source: &Path, target: &Path) -> Result<Mounted> {
    mkdir(target)?;
    host(
        "mount",
        [std::ffi::OsStr::new("--bind"), source.as_os_str(), target.as_os_str()],
    )
    .context("bind mount failed")?;
    Ok(Mounted {
        target: target.to_path_buf(),
    })
}

/// Options of one OverlayFS mount, as paths seen inside the chroot.
pub struct OverlaySpec<'a> {
    pub lowerdir: &'a str,
    pub upperdir: &'a str,
    pub workdir: &'a str,
    pub target: &'a str,
}

/// Mounts OverlayFS from inside the chroot, so the `lowerdir=`/`upperdir=`
/// strings in the chroot's /proc/self/mounts are the paths Nix compares with
/// the store settings (check-mount).
pub fn overlay(fs: &Rootfs, spec: &OverlaySpec) -> Result<Mounted> {
    for d in [spec.upperdir, spec.workdir, spec.target] {
        mkdir(&fs.host_path(d))?;
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        spec.lowerdir, spec.upperdir, spec.workdir
    );
    fs.run(&["mount", "-t", "overlay", "overlay", "-o", &opts, spec.target])?
        .ok()
        .context("mounting OverlayFS failed")?;
    Ok(Mounted {
        target: fs.host_path(spec.target),
    })
}

/// `mount -o remount` of an OverlayFS mount point, from inside the chroot.
pub fn remount(fs: &Rootfs, target: &str) -> Result<()> {
    fs.run(&["mount", "-o", "remount", target])?
        .ok()
        .context("remounting OverlayFS failed")?;
    Ok(())
}

/// Mounts an erofs image read-only (a loop device) from inside the chroot,
/// so the chroot sees it (the suite's namespace does not propagate host
/// mounts into the chroot's bind of the work directory).
pub fn erofs(fs: &Rootfs, image: &str, target: &str) -> Result<Mounted> {
    mkdir(&fs.host_path(target))?;
    fs.run(&["mount", "-t", "erofs", "-o", "loop,ro", image, target])?
        .ok()
        .context("mounting the erofs image failed")?;
    Ok(Mounted {
        target: fs.host_path(target),
    })
}

/// Bind-mounts `source` read-only on `target`, from inside the chroot (for
/// the same reason as [`erofs`]): the directory form of an image as a lower dir.
pub fn bind_ro(fs: &Rootfs, source: &str, target: &str) -> Result<Mounted> {
    mkdir(&fs.host_path(target))?;
    fs.run(&["mount", "-o", "bind,ro", source, target])?
        .ok()
        .context("read-only bind mount failed")?;
    Ok(Mounted {
        target: fs.host_path(target),
    })
}
