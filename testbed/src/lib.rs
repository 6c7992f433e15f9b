//! The test bed: a Debian root file system with real Nix, run in a chroot or
//! under systemd-nspawn, shared by the harnesses (the library part is filled
//! in beside this file; the harness binaries live under `src/bin/`).
//!
//! Invariant: the cached root file systems are never written in place.
