//! snix's own nix-daemon reading OUR `--grpc-listen` PathInfoService (runs
//! only when real snix binaries are given, `tests/snix/run`).
//!
//! `snix-nix-daemon/derivers`: our gRPC server on the fixture's index
//! (default `--grpc-deriver-name with-drv`), snix's nix-daemon in front of
//! it; `nix-store -q --deriver` and `--valid-derivers` of every sample path,
//! asked of snix's nix-daemon, must print exactly what Nix's own daemon
//! prints on the same lower store (exit code and stdout), and at least one
//! answer names a derivation.
//!
//! `snix-nix-daemon/without-drv-differs`: the same with `--grpc-deriver-name
//! without-drv` (the proto comment's form): snix's nix-daemon passes stored
//! names through unchanged, so it answers `--deriver` of a derivation output
//! without ".drv" and differs from Nix's daemon. This is why with-drv is the
//! default, and shows the first check can fail.

use crate::ctx::Ctx;
use crate::daemons::{self, Daemon};
use crate::fixture::Fixture;
use crate::report::{tagged, Report};
use crate::rootfs::{Output, Rootfs};
use anyhow::{bail, ensure, Result};

pub const NAMES: &[&str] = &["snix-nix-daemon/derivers", "snix-nix-daemon/without-drv-differs"];

pub fn run(ctx: &Ctx, fs: &Rootfs, fx: &Fixture, report: &mut Report) {
    let mut notes = String::new();
    let name = tagged(NAMES[0], &fs.label);
    if report.wanted(&name) {
        report.run(&name, || {
            notes = derivers_like_nix(ctx, fs, fx)?;
            Ok(())
        });
        report.note(&name, &notes);
    }
    let name = tagged(NAMES[1], &fs.label);
    if report.wanted(&name) {
        report.run(&name, || {
            notes = without_drv_differs(ctx, fs, fx)?;
            Ok(())
        });
        report.note(&name, &notes);
    }
}

/// Nix's daemon, and snix's nix-daemon in front of our gRPC server (started
/// with `extra` flags) on a fresh import of the fixture.
fn start(ctx: &Ctx, fs: &Rootfs, fx: &Fixture, what: &str, extra: &[&str]) -> Result<(Daemon, Daemon, Daemon)> {
    let dir = ctx.fresh_dir(&format!("snixnd-{what}-{}", fs.suite))?;
    let state = format!("{dir}/state");
    daemons::import_registration(ctx, fs, &fx.root, &state)?;
    let ours = format!("{dir}/ours.sock");
    let server = daemons::start_grpc_server_with(ctx, fs, &ours, &fx.store_dir(), &state, extra)?;
    let service = format!("grpc+unix://{}", daemons::grpc_socket(&ours));
    let snixd = daemons::start_snix_nix_daemon(ctx, fs, &format!("{dir}/snix-nix-daemon.sock"), &service)?;
    let nix = daemons::start_nix(ctx, fs, &format!("{dir}/nix.sock"), &fx.root)?;
    Ok((server, snixd, nix))
}

fn query(fs: &Rootfs, d: &Daemon, q: &str, path: &str) -> Result<Output> {
    fs.run(&[
        "nix-store",
        "--store",
        &format!("unix://{}", d.socket),
        "--query",
        q,
        path,
    ])
}

fn derivers_like_nix(ctx: &Ctx, fs: &Rootfs, fx: &Fixture) -> Result<String> {
    let (server, snixd, nix) = start(ctx, fs, fx, "with", &[])?;
    let mut named = 0;
    let mut asked = 0;
    for p in fx.sample() {
        for q in ["--deriver", "--valid-derivers"] {
            let (n, s) = (query(fs, &nix, q, p)?.ok()?, query(fs, &snixd, q, p)?);
            if n.stdout != s.stdout || n.code != s.code {
                bail!(
                    "nix-store -q {q} {p}: Nix's daemon printed {:?}, snix's nix-daemon (reading our gRPC service) \
                     {:?} (exit {:?}: {}); snix nix-daemon log: {}; our log: {}",
                    n.stdout(),
                    s.stdout(),
                    s.code,
                    s.stderr().trim(),
                    snixd.log_tail(),
                    server.log_tail()
                );
            }
            asked += 1;
            if n.stdout().contains(".drv") {
                named += 1;
            }
        }
    }
    ensure!(named > 0, "no sample path has a deriver: the check would prove nothing");
    Ok(format!(
        "{asked} answers equal to Nix's daemon, {named} naming a derivation (e.g. {} of {})",
        fx.tree_drv, fx.tree
    ))
}

fn without_drv_differs(ctx: &Ctx, fs: &Rootfs, fx: &Fixture) -> Result<String> {
    let (_server, snixd, nix) = start(ctx, fs, fx, "without", &["--grpc-deriver-name", "without-drv"])?;
    let n = query(fs, &nix, "--deriver", &fx.tree)?.ok()?.stdout();
    let s = query(fs, &snixd, "--deriver", &fx.tree)?.ok()?.stdout();
    let want = format!("{}\n", fx.tree_drv);
    ensure!(n == want, "Nix's daemon printed {n:?} for the deriver of {}", fx.tree);
    let stripped = format!("{}\n", fx.tree_drv.trim_end_matches(".drv"));
    ensure!(
        s == stripped,
        "with --grpc-deriver-name without-drv, snix's nix-daemon printed {s:?}, expected {stripped:?} \
         (snix passes the stored name through)"
    );
    Ok(format!(
        "as documented: snix's nix-daemon prints {} where Nix's daemon prints {}",
        stripped.trim(),
        want.trim()
    ))
}
