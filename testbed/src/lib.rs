//! The test bed: "a Debian root file system with a real Nix", shared by the
//! end-to-end suite (`e2e`), the benchmark (`bench`) and the local harnesses
//! (`snix-lower-store-systemd-local`, the NixOS harness).
//!
//! - [`cmd`]: running commands with captured output and errors that name the
//!   command, its exit status and the tail of its stderr;
//! - [`rootfs`]: where the provisioned roots live, the ready marker, which
//!   Nix each one carries (read from the root, never assumed) and running
//!   commands inside one with chroot;
//! - [`mounts`]: tmpfs, bind, OverlayFS, erofs mounts, each undone by a guard;
//! - [`namespace`]: re-executing the current program in a private mount
//!   (and optionally PID) namespace, so nothing outlives a run;
//! - [`nspawn`]: booting a root with systemd as PID 1 (systemd-nspawn
//!   `--volatile=overlay`: the cached tree is never written) and running
//!   commands inside it;
//! - [`report`]: the PASS/FAIL/SKIP lines and summary of the local harnesses.
//!
//! Invariant: nothing here writes into a cached root file system; every
//! mount made is private to the caller's namespace or undone on drop.

pub mod cmd;
pub mod mounts;
pub mod namespace;
pub mod nspawn;
pub mod report;
pub mod rootfs;
