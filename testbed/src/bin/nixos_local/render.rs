//! Part render: unit files and drop-ins rendered by nixpkgs' systemd-lib,
//! laid out over the package's own units as NixOS does (render.py),
//! /etc/fstab from config.fileSystems through systemd's fstab generator; the
//! effective units keep nothing of the package's non-NixOS defaults (issue
//! 12, 9); systemd-analyze verify on every distinct set, and on the
//! system-store placement's initrd units in a root of their own.
//!
//! Invariants: one configuration per distinct set of units/fstab/package;
//! verify passes only with exit 0 and no output; the host's systemd tree is
//! copied once and hard-linked into every root.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::proc::{cmd, cp, glob_dir, head, oneline, run, s, sanitize, tail1, timeout, Out};
use crate::Ctx;

/// Lays out configuration `name` under `root` (mode verify or boot).
pub(crate) fn render_config(ctx: &Ctx, name: &str, root: &Path, mode: &str) -> Out {
    let (py, eval, store, bin) = (
        ctx.here.join("render.py"),
        ctx.t.join("eval.json"),
        ctx.t.join("nixroot"),
        ctx.unit_bin(),
    );
    let mut c = cmd(&["python3", s(&py), s(&eval), name, s(root), mode, s(&store), s(&bin)]);
    c.env("REPO", &ctx.repo);
    run(&mut c)
}

/// Python's repr of a list of strings (the failure details quote it so).
fn pylist(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|x| format!("'{x}'")).collect();
    format!("[{}]", items.join(", "))
}

fn strings(e: &Value, key: &str) -> Vec<String> {
    e[key]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// What of the package's defaults stays in effective unit `e` (render.py
/// effective's JSON) when the user's lower dir is `own`.
pub(crate) fn leaked_defaults(e: &Value, own: &str) -> Vec<String> {
    let mut bad = vec![];
    let env_file = strings(e, "EnvironmentFile");
    if env_file.iter().any(|v| v.contains("/etc/snix-lower-store/env")) {
        bad.push(format!(
            "EnvironmentFile={} (the package default) overrides the module Environment=",
            pylist(&env_file)
        ));
    }
    let default = "/srv/lower/nix/store";
    let leaks = default != own;
    let rmf = strings(e, "RequiresMountsFor");
    if leaks && rmf.iter().any(|v| v.split_whitespace().any(|w| w == default)) {
        bad.push(format!(
            "RequiresMountsFor={} keeps the package default lower dir",
            pylist(&rmf)
        ));
    }
    let lower: Vec<String> = strings(e, "Environment")
        .into_iter()
        .filter(|v| v.contains("SNIX_LOWER_STORE_LOWER_DIR="))
        .collect();
    if leaks && lower.last().is_some_and(|l| l.contains(default)) {
        bad.push(format!(
            "the lower dir in effect is the package default: {}",
            lower[lower.len() - 1]
        ));
    }
    let exec = strings(e, "ExecStart");
    if exec.iter().any(|v| v.contains("/usr/local")) {
        bad.push(format!("ExecStart={}", pylist(&exec)));
    }
    bad
}

/// Issue 12, 9: over the package's unit, nothing of its non-NixOS defaults
/// stays in effect (systemd's rules: lists grow, an empty value resets).
fn check_effective(ctx: &mut Ctx, ev: &Value, name: &str, root: &Path, unit: &str) {
    let own = ev["configs"][name]["snix"]["lowerStoreDir"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let unit_path = root.join("etc/systemd/system").join(unit);
    let rel = run(&mut cmd(&[
        "realpath",
        "-m",
        &format!("--relative-to={}", s(root)),
        s(&unit_path),
    ]))
    .out();
    let base = format!("/{}", rel.trim_start_matches('/'));
    let dropins: Vec<String> = glob_dir(&root.join(format!("etc/systemd/system/{unit}.d")))
        .into_iter()
        .filter(|n| n.ends_with(".conf"))
        .map(|n| format!("{}/etc/systemd/system/{unit}.d/{n}", s(root)))
        .collect();
    let mut c = cmd(&[
        "python3",
        s(&ctx.here.join("render.py")),
        "effective",
        &format!("{}{base}", s(root)),
    ]);
    let eff = run(c.args(&dropins));
    let check = format!("9 render {name}: {unit} keeps none of the package's non-NixOS defaults");
    let bad = match serde_json::from_str::<Value>(&eff.stdout) {
        Ok(e) => leaked_defaults(&e, &own),
        Err(e) => vec![format!("render.py effective: {e}: {}", eff.all())],
    };
    let how = if base == format!("/etc/systemd/system/{unit}") {
        "whole unit from the module"
    } else {
        "package unit + drop-in"
    };
    ctx.r.check(bad.is_empty(), &check, how, &bad.join("; "));
}

/// One configuration per distinct set of units, fstab lines and package;
/// returns the names and how many repeat another one.
fn distinct_configs(ev: &Value) -> (Vec<String>, usize) {
    let (mut seen, mut names, mut dups) = (BTreeSet::new(), vec![], 0);
    for (n, c) in ev["configs"].as_object().into_iter().flatten() {
        if c["evaluates"] == Value::Bool(true) && c["snix"]["enable"] == Value::Bool(true) {
            let key = Value::Array(vec![c["units"].clone(), c["fstab"].clone(), c["package"].clone()]).to_string();
            if seen.insert(key) {
                names.push(n.clone());
            } else {
                dups += 1;
            }
        }
    }
    (names, dups)
}

/// `cp -al` of the host's systemd tree (copied once) into `root`, and /lib.
fn host_systemd(ctx: &Ctx, root: &Path) {
    let host = ctx.t.join("host-systemd");
    if !host.is_dir() {
        cp(&["-a", "/usr/lib/systemd", s(&host)]);
    }
    let _ = fs::remove_dir_all(root.join("usr/lib/systemd"));
    cp(&["-al", s(&host), s(&root.join("usr/lib/systemd"))]);
    let _ = fs::remove_file(root.join("lib"));
    let _ = std::os::unix::fs::symlink("usr/lib", root.join("lib"));
}

/// `systemd-analyze verify` of `units` in `root`: Ok when it exits 0 silently.
fn verify(root: &Path, units: &[String]) -> Result<(), String> {
    let mut c = timeout(
        120,
        &["systemd-analyze", "verify", "--man=no", &format!("--root={}", s(root))],
    );
    let o = run(c.args(units));
    let out = o.all();
    if o.ok && out.is_empty() {
        Ok(())
    } else {
        Err(oneline(&head(&out, 12)))
    }
}

/// The unit names in `dir` with one of `suffixes`, sorted.
fn units_in(dir: &Path, suffixes: &[&str]) -> Vec<String> {
    glob_dir(dir)
        .into_iter()
        .filter(|n| suffixes.iter().any(|x| n.ends_with(x)))
        .collect()
}

pub(crate) fn part(ctx: &mut Ctx) {
    let Some(ev) = ctx.eval_json("render") else { return };
    if !crate::proc::is_exec(&ctx.unit_bin()) {
        let why = format!(
            "no binary: {} (package part) nor {}",
            ctx.pkg_bin.display(),
            ctx.bin.display()
        );
        ctx.r.skip_or_fail("render", &why);
        return;
    }
    let (names, dups) = distinct_configs(&ev);
    ctx.r
        .info(&format!("{dups} configuration(s) render the same units as another one"));
    let systemd = run(&mut cmd(&["systemctl", "--version"])).out();
    let systemd = head(&systemd, 1).split(' ').take(2).collect::<Vec<_>>().join(" ");
    let (mut n_units, mut n_configs) = (0, 0);
    for name in &names {
        if let Some(n) = render_one(ctx, &ev, name, &systemd) {
            n_units += n;
            n_configs += 1;
        }
    }
    if n_configs == 0 {
        ctx.r.fail(
            "render: no configuration to render",
            "eval produced none with the module enabled",
        );
    }
    ctx.r.info(&format!(
        "rendered {n_configs} configurations, {n_units} units verified"
    ));
    render_initrd(ctx, &ev);
}

/// Renders and verifies configuration `name`; the number of units verified.
fn render_one(ctx: &mut Ctx, ev: &Value, name: &str, systemd: &str) -> Option<usize> {
    let root = ctx.t.join("render").join(sanitize(name)).join("root");
    let gen = root.join("run/systemd/generator");
    let _ = fs::create_dir_all(root.join("usr/lib/systemd"));
    let _ = fs::create_dir_all(&gen);
    let o = render_config(ctx, name, &root, "verify");
    if !o.ok {
        ctx.r
            .fail(&format!("render {name}: lay out the units"), &tail1(&o.all(), 3));
        return None;
    }
    for unit in ["snix-lower-store.service", "snix-lower-store.socket"] {
        if root.join("etc/systemd/system").join(unit).exists() {
            check_effective(ctx, ev, name, &root, unit);
        }
    }
    // Mount units from the rendered /etc/fstab, by systemd's fstab generator.
    let mut c = cmd(&[
        "/lib/systemd/system-generators/systemd-fstab-generator",
        s(&gen),
        s(&gen),
        s(&gen),
    ]);
    c.env("SYSTEMD_FSTAB", root.join("etc/fstab"))
        .env("SYSTEMD_LOG_LEVEL", "err");
    let o = run(&mut c);
    if !o.ok {
        ctx.r.fail(
            &format!("render {name}: systemd-fstab-generator on the rendered /etc/fstab"),
            &o.all(),
        );
        return None;
    }
    host_systemd(ctx, &root);
    // verify does not run generators: their mount units go where it looks.
    cp(&[
        "-a",
        &format!("{}/.", s(&gen)),
        &format!("{}/etc/systemd/system/", s(&root)),
    ]);
    let mut units = units_in(
        &root.join("etc/systemd/system"),
        &[".service", ".socket", ".mount", ".target"],
    );
    units.retain(|u| u != "-.mount");
    match verify(&root, &units) {
        Ok(()) => ctx.r.pass(
            &format!("render {name}: systemd-analyze verify ({systemd})"),
            &format!("{} units: {}", units.len(), units.join(" ")),
        ),
        Err(e) => ctx.r.fail(&format!("render {name}: systemd-analyze verify"), &e),
    }
    Some(units.len())
}

/// The `*.target` names in `text` as `grep -o '[A-Za-z0-9@_.\\-]*\.target'`
/// finds them (leftmost, longest).
pub(crate) fn target_names(text: &str) -> Vec<String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "@_.\\-".contains(c);
    let mut out = vec![];
    for run_ in text.split(|c: char| !allowed(c)) {
        let mut rest = run_;
        while let Some(i) = rest.rfind(".target") {
            out.push(rest[..i + 7].to_string());
            rest = &rest[i + 7..];
        }
    }
    out
}

/// The system-store placement's initrd units, one configuration per
/// distinct set, each in a root of its own over the host's systemd units.
fn render_initrd(ctx: &mut Ctx, ev: &Value) {
    let mut seen = BTreeSet::new();
    let mut n = 0;
    for (name, c) in ev["configs"].as_object().into_iter().flatten() {
        let u = if c["evaluates"] == Value::Bool(true) {
            c.get("initrdUnits").cloned()
        } else {
            None
        };
        let u = u.unwrap_or(Value::Object(Default::default()));
        // A configuration an assertion refuses is never built.
        let refused = c["failedAssertions"].as_array().is_some_and(|a| !a.is_empty());
        if u.get("snix-lower-store-initrd-paths.service").is_none() || refused {
            continue;
        }
        let links = c.get("initrdUnitLinks").cloned().unwrap_or(Value::Null);
        if seen.insert(Value::Array(vec![u, links]).to_string()) {
            render_initrd_one(ctx, name);
            n += 1;
        }
    }
    if n == 0 {
        ctx.r.fail(
            "render: no system-store configuration with initrd units",
            "eval produced none",
        );
    }
}

fn render_initrd_one(ctx: &mut Ctx, name: &str) {
    let root = ctx.t.join("render-initrd").join(sanitize(name)).join("root");
    let _ = fs::create_dir_all(root.join("usr/lib"));
    let (py, eval, store) = (
        ctx.here.join("render.py"),
        ctx.t.join("eval.json"),
        ctx.t.join("nixroot"),
    );
    let o = run(&mut cmd(&[
        "python3",
        s(&py),
        "initrd",
        s(&eval),
        name,
        s(&root),
        s(&store),
    ]));
    if !o.ok {
        ctx.r
            .fail(&format!("render {name}: lay out the initrd units"), &tail1(&o.all(), 3));
        return;
    }
    host_systemd(ctx, &root);
    let sys = root.join("etc/systemd/system");
    let mut units = units_in(&sys, &[".service", ".mount"]);
    // Targets the units name that systemd of this host does not ship: a
    // minimal stand-in each, reported.
    let mut targets: Vec<String> = units
        .iter()
        .flat_map(|u| target_names(&fs::read_to_string(sys.join(u)).unwrap_or_default()))
        .collect();
    targets.sort();
    targets.dedup();
    for d in glob_dir(&sys) {
        if let Some(t) = d.strip_suffix(".wants").or_else(|| d.strip_suffix(".requires")) {
            if t.ends_with(".target") {
                targets.push(t.to_string());
            }
        }
    }
    let mut stand = vec![];
    for t in targets {
        if !root.join("usr/lib/systemd/system").join(&t).exists() && !sys.join(&t).exists() {
            let _ = fs::write(sys.join(&t), format!("[Unit]\nDescription=stand-in for {t}\n"));
            stand.push(t);
        }
    }
    units.push("initrd-fs.target".into());
    let stand = if stand.is_empty() {
        String::new()
    } else {
        format!("; stand-ins: {}", stand.join(" "))
    };
    let check = format!("render {name}: systemd-analyze verify of the initrd units");
    match verify(&root, &units) {
        Ok(()) => ctx
            .r
            .pass(&check, &format!("{} units: {}{stand}", units.len(), units.join(" "))),
        Err(e) => ctx.r.fail(&check, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_as_grep_finds_them() {
        assert_eq!(
            target_names("After=a.target b-c.target\nWantedBy=x.targets"),
            ["a.target", "b-c.target", "x.target"]
        );
    }

    #[test]
    fn package_defaults_are_named() {
        let e =
            serde_json::json!({"EnvironmentFile": ["-/etc/snix-lower-store/env"], "ExecStart": ["/usr/local/bin/x"]});
        assert_eq!(leaked_defaults(&e, "/srv/lower/nix/store").len(), 2);
        let ok = serde_json::json!({"Environment": ["SNIX_LOWER_STORE_LOWER_DIR=/srv/lower/nix/store"]});
        assert!(leaked_defaults(&ok, "/srv/lower/nix/store").is_empty());
        assert_eq!(leaked_defaults(&ok, "/other").len(), 1);
    }
}
