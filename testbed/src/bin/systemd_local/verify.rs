//! Part c: `systemd-analyze verify` on the shipped units and `systemd-analyze
//! security`'s overall exposure level, on the host (systemd 252, offline)
//! and in the container (systemd 257, see [`crate::container`]).
//!
//! Invariant: the accepted maximum sits just above what the shipped unit
//! scores today, so a unit change that weakens the sandbox fails here; the
//! level is printed on every run. Lower it when the unit gets stricter.

use crate::Setup;
use anyhow::{Context, Result};
use std::path::Path;
use std::process::Command;
use testbed::cmd::capture;
use testbed::report::Report;

/// Highest accepted exposure on the host: systemd 252 (Debian 12) scores 0.4.
pub(crate) const MAX_EXPOSURE_HOST: f64 = 0.5;
/// Highest accepted exposure in the container: systemd 257 (trixie) scores 0.4.
pub(crate) const MAX_EXPOSURE_257: f64 = 0.5;

/// Parses "Overall exposure level for X: N.N ..." from `file` (systemd-analyze
/// security's output); passes if N.N <= `max`.
pub(crate) fn exposure_check(r: &mut Report, name: &str, file: &Path, max: f64) {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let line = text
        .find("Overall exposure level")
        .map(|i| text[i..].lines().next().unwrap_or("").to_string())
        .unwrap_or_default();
    let level = line
        .split_once(": ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .filter(|l| l.contains('.'))
        .and_then(|l| l.parse::<f64>().ok().map(|v| (l.to_string(), v)));
    let Some((shown, level)) = level else {
        r.fail(
            name,
            &format!("no exposure level in the output: {}", crate::file_tail(file, 3)),
        );
        return;
    };
    let m = format!("{max:.1}");
    if level <= max {
        r.pass(name, &format!("exposure {shown} <= {m}: {line}"));
    } else {
        r.fail(
            name,
            &format!(
                "exposure {shown} above the accepted {m} (see {}): {line}",
                file.display()
            ),
        );
    }
}

/// systemd-analyze verify resolves ExecStart= and dependencies inside
/// --root: give it the host's units and the binary at the path the unit names.
fn verify_root(s: &Setup) -> Result<std::path::PathBuf> {
    let vr = s.t("verify-root");
    for d in ["usr/local/bin", "usr/local/lib/systemd/system", "usr/lib/systemd"] {
        std::fs::create_dir_all(vr.join(d))?;
    }
    let _ = capture(
        Command::new("cp")
            .args(["-a", "/usr/lib/systemd/system"])
            .arg(vr.join("usr/lib/systemd/")),
    );
    std::fs::copy(&s.bin, vr.join("usr/local/bin/snix-lower-store")).context("cannot copy the binary")?;
    for u in ["snix-lower-store.socket", "snix-lower-store.service"] {
        std::fs::copy(s.units.join(u), vr.join("usr/local/lib/systemd/system").join(u))
            .with_context(|| format!("cannot copy {u}"))?;
    }
    Ok(vr)
}

/// Part c on the host.
pub(crate) fn host(s: &Setup, r: &mut Report) -> Result<()> {
    let vr = verify_root(s)?;
    let mut root = std::ffi::OsString::from("--root=");
    root.push(&vr);
    let out = capture(
        Command::new("timeout")
            .args(["60", "systemd-analyze", "verify"])
            .arg(root)
            .args(["snix-lower-store.socket", "snix-lower-store.service"]),
    )?;
    let version = capture(Command::new("systemctl").arg("--version"))?.stdout();
    let version: Vec<&str> = version.lines().next().unwrap_or("").split(' ').take(2).collect();
    let text = out.combined();
    if out.success() && text.trim().is_empty() {
        r.pass(&format!("c: systemd-analyze verify (host, {})", version.join(" ")), "");
    } else {
        r.fail("c: systemd-analyze verify (host)", text.trim_end());
    }
    let sec = capture(
        Command::new("timeout")
            .args(["60", "systemd-analyze", "security", "--offline=true", "--no-pager"])
            .arg(s.units.join("snix-lower-store.service")),
    )?;
    let file = s.t("security-host.txt");
    std::fs::write(&file, sec.combined())?;
    exposure_check(
        r,
        "c: systemd-analyze security --offline (host)",
        &file,
        MAX_EXPOSURE_HOST,
    );
    Ok(())
}
