//! The Debian root file systems that carry the real Nix clients: where they
//! are, whether one is provisioned, which Nix each carries and what that Nix
//! can do, and running commands inside one with chroot.
//!
//! Provisioning (`.ci/provision-nix-rootfs`) leaves one tree per Debian suite
//! under [`cache_dir`] (bookworm: Nix 2.8, trixie: Nix 2.26.3 and systemd
//! 257, sid: Nix 2.34) and writes [`READY_MARKER`] last, so a tree without it
//! is never used. A chroot's Nix version is read from its own `nix-store
//! --version`, never assumed from the suite name; what a caller may ask of it
//! follows from that version alone (see [`Rootfs::lacks`]).
//!
//! Invariant: the cached trees are never written here; callers mount what
//! they need (a tmpfs, a bind, OverlayFS) over them in a private namespace.

use crate::cmd::{capture, Output};
use anyhow::{anyhow, bail, Result};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where `.ci/provision-nix-rootfs` caches the roots (overridden by
/// `SNIX_LOWER_STORE_ROOTFS_CACHE`).
pub const DEFAULT_CACHE: &str = "/var/cache/snix-lower-store/rootfs";

/// Written into a root when its provisioning finished.
pub const READY_MARKER: &str = ".snix-lower-store-ready";

/// The suites provisioned, oldest Nix first: bookworm (Nix 2.8), trixie
/// (Nix 2.26.3, systemd 257), sid (Nix 2.34).
pub const SUITES: [&str; 3] = ["bookworm", "trixie", "sid"];

/// The suite whose systemd (257) the systemd harnesses boot.
pub const SYSTEMD_SUITE: &str = "trixie";

/// `NIX_CONFIG` of commands in a root unless a caller sets another: no
/// substituters (nothing here touches the network), `ca-derivations` on, as
/// for anyone with content-addressed derivations, so Nix records and asks
/// for realisations.
pub const NIX_CONFIG_OFFLINE: &str =
    "substituters =\nconnect-timeout = 5\nwarn-dirty = false\nfsync-metadata = false\n\
                                      extra-experimental-features = ca-derivations\n";

/// `PATH` of every command run inside a root.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The cache directory: `SNIX_LOWER_STORE_ROOTFS_CACHE` or [`DEFAULT_CACHE`].
pub fn cache_dir() -> PathBuf {
    std::env::var_os("SNIX_LOWER_STORE_ROOTFS_CACHE").map_or_else(|| PathBuf::from(DEFAULT_CACHE), PathBuf::from)
}

/// Whether the root at `dir` finished provisioning.
pub fn is_ready(dir: &Path) -> bool {
    dir.join(READY_MARKER).exists()
}

/// Something a scenario needs from the client's Nix that older versions lack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// Nix's `local-overlay://` store (every `overlay-*` scenario).
    LocalOverlay,
    /// `nix derivation show`.
    DerivationShow,
    /// `nix store path-from-hash-part`.
    PathFromHashPart,
    /// `nix-store --query --valid-derivers`.
    ValidDerivers,
    /// `DRV^*` and `DRV^out` installables.
    OutputsSyntax,
    /// A `.drv` argument of a `nix` command means the `.drv` itself.
    DrvArgIsItself,
    /// Processes Nix starts stay in the chroot Nix runs in.
    ChildStaysInChroot,
    /// `nix path-info --json` prints `"ultimate": false`.
    JsonUltimateFalse,
}

/// One Debian root file system with a real Nix inside.
#[derive(Debug, Clone)]
pub struct Rootfs {
    /// Debian suite name (`bookworm`, `trixie`, `sid`).
    pub suite: String,
    /// Host path of the root file system.
    pub dir: PathBuf,
    /// Full Nix version, e.g. `2.26.3`.
    pub version: String,
    /// Short tag used on report lines, e.g. `nix-2.26`.
    pub label: String,
    /// What `nix-store --version` printed, e.g. `nix-store (Nix) 2.26.3`.
    pub version_line: String,
    /// `NIX_CONFIG` of every command run inside (see [`NIX_CONFIG_OFFLINE`]).
    pub nix_config: String,
}

impl Rootfs {
    /// Opens a provisioned root file system (the version is filled in by
    /// [`Rootfs::detect_version`] once /proc is mounted inside it).
    pub fn open(suite: &str, dir: &Path) -> Result<Rootfs> {
        if !is_ready(dir) {
            bail!(
                "root file system {} is not provisioned (no {READY_MARKER}); run .ci/provision-nix-rootfs {suite}",
                dir.display()
            );
        }
        Ok(Rootfs {
            suite: suite.to_string(),
            dir: dir.to_path_buf(),
            version: String::new(),
            label: suite.to_string(),
            version_line: String::new(),
            nix_config: NIX_CONFIG_OFFLINE.to_string(),
        })
    }

    /// The same root with another `NIX_CONFIG` for the commands run inside.
    pub fn with_nix_config(mut self, config: &str) -> Rootfs {
        self.nix_config = config.to_string();
        self
    }

    /// Asks the chroot's Nix for its version; sets `version` and `label`.
    pub fn detect_version(&mut self) -> Result<()> {
        let v = self.ok(&["nix-store", "--version"])?;
        self.version_line = v.trim().to_string();
        let version = v
            .split_whitespace()
            .last()
            .ok_or_else(|| anyhow!("unexpected `nix-store --version` output: {v:?}"))?
            .to_string();
        let short: Vec<&str> = version.split('.').take(2).collect();
        self.label = format!("nix-{}", short.join("."));
        self.version = version;
        Ok(())
    }

    /// The (major, minor) of [`Rootfs::version`]; (0, 0) before it is detected.
    pub fn major_minor(&self) -> (u32, u32) {
        let mut it = self.version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        (it.next().unwrap_or(0), it.next().unwrap_or(0))
    }

    /// Why this Nix cannot do `what`, or None when it can. The versions are
    /// those of Nix's own sources: the local-overlay store and its
    /// `local-overlay-store` feature appeared in 2.22, `nix derivation show`
    /// in 2.15 (before: `nix show-derivation`), `nix store
    /// path-from-hash-part` in 2.12, `nix-store --query --valid-derivers` in
    /// 2.18, `DRV^OUTPUTS` in 2.13, a `.drv` argument meaning itself in 2.15,
    /// children staying in Nix's chroot in 2.17, `"ultimate": false` in
    /// path-info JSON in 2.19.
    pub fn lacks(&self, what: Feature) -> Option<String> {
        let (need, text) = match what {
            Feature::LocalOverlay => ((2, 22), "no local-overlay store (added in Nix 2.22)"),
            Feature::DerivationShow => (
                (2, 15),
                "no `nix derivation show` (added in Nix 2.15; `nix show-derivation` before)",
            ),
            Feature::PathFromHashPart => (
                (2, 12),
                "no `nix store path-from-hash-part` (added in Nix 2.12), the only CLI command that sends \
                 QueryPathFromHashPart",
            ),
            Feature::ValidDerivers => ((2, 18), "no `nix-store --query --valid-derivers` (added in Nix 2.18)"),
            Feature::OutputsSyntax => ((2, 13), "no `DRV^OUTPUTS` installable syntax (added in Nix 2.13)"),
            Feature::DrvArgIsItself => (
                (2, 15),
                "`nix` commands read a `.drv` argument as that derivation's outputs (until Nix 2.15; since then \
                 as the `.drv` itself)",
            ),
            Feature::JsonUltimateFalse => (
                (2, 19),
                "`nix path-info --json` prints `ultimate` only when true (always since Nix 2.19)",
            ),
            Feature::ChildStaysInChroot => (
                (2, 17),
                "a process Nix starts (the `remote-program` of `ssh-ng://localhost`) runs in the mount \
                 namespace's root, outside the chroot Nix runs in (restoreMountNamespace restores the root \
                 since Nix 2.17)",
            ),
        };
        (self.major_minor() < need).then(|| format!("Nix {}: {text}", self.version))
    }

    /// `nix derivation show`, or `nix show-derivation` where that is all this
    /// Nix has (same JSON).
    pub fn derivation_show(&self) -> &'static [&'static str] {
        if self.lacks(Feature::DerivationShow).is_some() {
            &["nix", "show-derivation"]
        } else {
            &["nix", "derivation", "show"]
        }
    }

    /// Host path of a path as seen inside this chroot.
    pub fn host_path(&self, inside: &str) -> PathBuf {
        self.dir.join(inside.trim_start_matches('/'))
    }

    /// A command that runs `args` inside the chroot with a clean, fixed
    /// environment and this root's [`Rootfs::nix_config`].
    pub fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut c = Command::new("chroot");
        c.arg(&self.dir).args(args);
        c.env_clear()
            .env("PATH", PATH)
            .env("HOME", "/root")
            .env("TMPDIR", "/tmp")
            .env("LANG", "C.UTF-8")
            .env("LIBMOUNT_FORCE_MOUNT2", "always")
            .env("NIX_CONFIG", &self.nix_config);
        c
    }

    /// Runs `args` in the chroot, capturing everything; never fails on a
    /// non-zero exit (use [`Output::ok`]).
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<Output> {
        let mut out = capture(&mut self.command(args))?;
        out.desc = format!("[{}] {}", self.label, strip_chroot(&out.desc, &self.dir));
        Ok(out)
    }

    /// Runs `args` in the chroot, requires success, returns stdout.
    pub fn ok<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<String> {
        Ok(self.run(args)?.ok()?.stdout())
    }

    /// Runs a shell snippet in the chroot.
    pub fn sh(&self, script: &str) -> Result<Output> {
        self.run(&["/bin/sh", "-ec", script])
    }
}

fn strip_chroot(desc: &str, dir: &Path) -> String {
    let prefix = format!("chroot {} ", dir.display());
    desc.strip_prefix(&prefix).unwrap_or(desc).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nix(version: &str) -> Rootfs {
        Rootfs {
            suite: "x".into(),
            dir: PathBuf::from("/nonexistent"),
            version: version.into(),
            label: "x".into(),
            version_line: String::new(),
            nix_config: String::new(),
        }
    }

    #[test]
    fn features_follow_the_version() {
        let old = nix("2.8.0");
        for f in [
            Feature::LocalOverlay,
            Feature::DerivationShow,
            Feature::PathFromHashPart,
            Feature::ValidDerivers,
            Feature::OutputsSyntax,
            Feature::DrvArgIsItself,
            Feature::ChildStaysInChroot,
            Feature::JsonUltimateFalse,
        ] {
            let why = old.lacks(f).unwrap_or_else(|| panic!("Nix 2.8.0 should lack {f:?}"));
            assert!(why.starts_with("Nix 2.8.0: "), "{why}");
            assert_eq!(nix("2.26.3").lacks(f), None, "{f:?}");
            assert_eq!(nix("2.34.8").lacks(f), None, "{f:?}");
        }
        // The exact first version has it; the one before does not.
        assert_eq!(nix("2.22.0").lacks(Feature::LocalOverlay), None);
        assert!(nix("2.21.9").lacks(Feature::LocalOverlay).is_some());
        assert_eq!(old.derivation_show(), ["nix", "show-derivation"]);
        assert_eq!(nix("2.15.0").derivation_show(), ["nix", "derivation", "show"]);
    }
}
