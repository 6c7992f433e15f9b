//! Commands in a cached Debian root file system (trixie: Nix 2.26, sid: Nix
//! 2.34) and as the unprivileged package builder.
//!
//! The harness re-executes itself under `unshare -m` (hidden subcommands
//! `__in-rootfs` and `__as-builder`): in that private mount namespace it
//! mounts a tmpfs over the root's /mnt, binds the repo at /mnt/src and
//! nixpkgs at /mnt/nixpkgs read-only and the scratch directory at /mnt/work,
//! then execs chroot with a clean environment.
//!
//! Invariants: the cached root file systems are never written (every mount
//! lives in the private namespace and dies with it); Nix's store for these
//! commands is the chroot store under the scratch directory.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use crate::proc::s;
use crate::Ctx;

/// Nix with a chroot store in scratch/nixroot (paths stay /nix/store/...).
pub(crate) const NIX_STORE_ARGS: [&str; 8] = [
    "--store",
    "local?root=/mnt/work/nixroot",
    "--option",
    "sandbox",
    "false",
    "--option",
    "build-users-group",
    "",
];

fn self_exe() -> String {
    std::env::current_exe()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "/proc/self/exe".into())
}

/// `args` in root file system `name` (trixie or sid) as described above.
pub(crate) fn in_rootfs<S: AsRef<str>>(ctx: &Ctx, name: &str, args: &[S]) -> Command {
    rootfs_cmd(ctx, name, false, args)
}

/// As `in_rootfs` in trixie, with its own store at /nix = scratch/image-nix
/// (a chroot store cannot build without a sandbox) and the host's /dev.
pub(crate) fn in_rootfs_nix<S: AsRef<str>>(ctx: &Ctx, args: &[S]) -> Command {
    let _ = std::fs::create_dir_all(ctx.t.join("image-nix"));
    rootfs_cmd(ctx, "trixie", true, args)
}

fn rootfs_cmd<S: AsRef<str>>(ctx: &Ctx, name: &str, own_nix: bool, args: &[S]) -> Command {
    let mut c = Command::new("unshare");
    c.args(["-m", "--", &self_exe(), "__in-rootfs"]);
    c.args([
        s(&ctx.rootfs_cache.join(name)),
        s(&ctx.repo),
        s(&ctx.nixpkgs),
        s(&ctx.t),
    ]);
    c.arg(if own_nix { "1" } else { "0" }).arg("--");
    c.args(args.iter().map(|a| a.as_ref()));
    c
}

/// `--version`'s last word of a Nix tool in root `name` ("Nix 2.26.3").
pub(crate) fn nix_version(ctx: &Ctx, name: &str) -> String {
    let o = crate::proc::run(&mut in_rootfs(ctx, name, &["nix-store", "--version"]));
    format!("Nix {}", crate::proc::last_word(&o.stdout))
}

fn mount(args: &[&str]) -> Result<(), String> {
    let st = Command::new("mount")
        .args(args)
        .status()
        .map_err(|e| format!("mount {args:?}: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("mount {args:?} failed"))
    }
}

fn mkdir(p: &str) -> Result<(), String> {
    std::fs::create_dir(p).map_err(|e| format!("mkdir {p}: {e}"))
}

/// The hidden `__in-rootfs ROOTFS REPO NIXPKGS WORK OWN_NIX -- CMD...`
/// (already in a private mount namespace); returns only on an error.
pub(crate) fn internal_in_rootfs(a: &[String]) -> i32 {
    if a.len() < 7 || a[5] != "--" {
        eprintln!("__in-rootfs: ROOTFS REPO NIXPKGS WORK OWN_NIX -- CMD...");
        return 2;
    }
    let (rootfs, repo, nixpkgs, work) = (&a[0], &a[1], &a[2], &a[3]);
    let setup = || -> Result<(), String> {
        let mnt = format!("{rootfs}/mnt");
        mount(&["-t", "tmpfs", "-o", "mode=0755", "nixos-local", &mnt])?;
        for d in ["src", "nixpkgs", "work"] {
            mkdir(&format!("{mnt}/{d}"))?;
        }
        mount(&["--bind", "-o", "ro", repo, &format!("{mnt}/src")])?;
        mount(&["--bind", "-o", "ro", nixpkgs, &format!("{mnt}/nixpkgs")])?;
        mount(&["--bind", work, &format!("{mnt}/work")])?;
        if a[4] == "1" {
            mount(&["--bind", &format!("{work}/image-nix"), &format!("{rootfs}/nix")])?;
        }
        mount(&["-t", "proc", "proc", &format!("{rootfs}/proc")])?;
        if a[4] == "1" {
            mount(&["--rbind", "/dev", &format!("{rootfs}/dev")])?;
        }
        Ok(())
    };
    if let Err(e) = setup() {
        eprintln!("in-rootfs: {e}");
        return 1;
    }
    let err = Command::new("chroot")
        .arg(rootfs)
        .args(["env", "-i", "PATH=/usr/bin:/bin", "HOME=/root", "NIX_REMOTE="])
        .args(&a[6..])
        .exec();
    eprintln!("in-rootfs: chroot {rootfs}: {err}");
    127
}

/// `args` as the throwaway build user (nobody:nogroup), without network
/// (but with loopback up, as in Nix's sandbox), with this machine's
/// toolchain `sysroot` read-only at /mnt/toolchain, HOME=/homeless-shelter.
pub(crate) fn as_builder<S: AsRef<str>>(sysroot: &Path, args: &[S]) -> Command {
    let mut c = Command::new("unshare");
    c.args(["-m", "-n", "--", &self_exe(), "__as-builder", s(sysroot), "--"]);
    c.args(args.iter().map(|a| a.as_ref()));
    c
}

/// The hidden `__as-builder SYSROOT -- CMD...`; returns only on an error.
pub(crate) fn internal_as_builder(a: &[String]) -> i32 {
    if a.len() < 3 || a[1] != "--" {
        eprintln!("__as-builder: SYSROOT -- CMD...");
        return 2;
    }
    let setup = || -> Result<(), String> {
        let st = Command::new("ip").args(["link", "set", "lo", "up"]).status();
        if !st.map(|s| s.success()).unwrap_or(false) {
            return Err("ip link set lo up failed".into());
        }
        mount(&["-t", "tmpfs", "-o", "mode=0755", "nixos-local-toolchain", "/mnt"])?;
        mkdir("/mnt/toolchain")?;
        mount(&["--bind", "-o", "ro", &a[0], "/mnt/toolchain"])
    };
    if let Err(e) = setup() {
        eprintln!("as-builder: {e}");
        return 1;
    }
    let err = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=-all"])
        .args([
            "env",
            "-i",
            "PATH=/mnt/toolchain/bin:/usr/bin:/bin",
            "HOME=/homeless-shelter",
        ])
        .args(&a[2..])
        .exec();
    eprintln!("as-builder: setpriv: {err}");
    127
}
