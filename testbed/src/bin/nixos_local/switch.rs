//! Part switch (issue 21): configuration A booted under systemd PID 1, then
//! B applied as switch-to-configuration-ng decides (tests/nixos-local/switch.py:
//! which units it stops, reloads, restarts and starts, with the lines of its
//! main.rs each decision follows), and the state checked. Scenarios: a
//! socket-only change, disable, and a lower change (lower.device to a lower
//! lacking a path something was built on: lower and overlay remounted,
//! import and reconcile re-run, the path invalidated).
//!
//! Invariants: the plan is carried out in switch-to-configuration-ng's order
//! (stop, activate, reset-failed + daemon-reload, reload, restart, start);
//! files bound into the container are rewritten in place, never replaced.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::boot::{boot_prereqs, build_expr, demo, failed_journal, nix_build, rot_journal, Demo};
use crate::nspawn::{write_fstab_container, BootSpec, Container};
use crate::proc::{cmd, cp, fresh_dir, glob_dir, pipe, run, s, tail, tail1};
use crate::render::render_config;
use crate::rotate::{container_nix_store, rot_lowers, summary};
use crate::Ctx;

const LOWER: &str = "var-lib-snix\\x2doverlay-lower.mount";
const OVERLAY: &str = "var-lib-snix\\x2doverlay-nix-store.mount";
const IMPORT: &str = "snix-lower-store-import.service";
const RECONCILE: &str = "snix-lower-store-reconcile.service";
const SOCKET: &str = "snix-lower-store.socket";

/// switch.py's plan: the units to stop, skip, reload, restart, start.
struct Plan {
    json: String,
    v: Value,
}

impl Plan {
    fn units(&self, what: &str) -> Vec<String> {
        self.v[what]
            .as_array()
            .map(|a| a.iter().filter_map(|u| u.as_str().map(String::from)).collect())
            .unwrap_or_default()
    }

    fn has(&self, what: &str, unit: &str) -> bool {
        self.units(what).iter().any(|u| u == unit)
    }
}

/// A booted configuration A with B laid out beside it.
struct Sw {
    c: Container,
    a: PathBuf,
    b: PathBuf,
    overlay: PathBuf,
    log: PathBuf,
}

/// `systemctl VERB UNITS...` in the container when there are units.
fn systemctl(c: &Container, verb: &str, units: &[String], log: &mut String) {
    if !units.is_empty() {
        let args: Vec<&str> = ["systemctl", verb]
            .into_iter()
            .chain(units.iter().map(String::as_str))
            .collect();
        log.push_str(&c.in_c(120, &args).all());
        log.push('\n');
    }
}

/// Carries out switch.py's plan from A to B in switch-to-configuration-ng's
/// order; Err with what went wrong when there is no plan.
fn apply_switch(ctx: &Ctx, sw: &Sw) -> Result<Plan, String> {
    let (a, b, c) = (&sw.a, &sw.b, &sw.c);
    let rootfs = ctx.rootfs_cache.join("trixie");
    let bus = [
        "busctl",
        "--json=short",
        "call",
        "org.freedesktop.systemd1",
        "/org/freedesktop/systemd1",
    ];
    let bus: Vec<&str> = bus
        .into_iter()
        .chain([
            "org.freedesktop.systemd1.Manager",
            "ListUnitsByPatterns",
            "asas",
            "0",
            "0",
        ])
        .collect();
    let active = c.in_c(60, &bus);
    if !active.ok {
        return Err(active.all());
    }
    let active_json = ctx.t.join("switch-active.json");
    let _ = fs::write(&active_json, &active.stdout);
    let (ua, ub) = (a.join("etc/systemd/system"), b.join("etc/systemd/system"));
    let (fa, fb) = (a.join("etc/fstab"), b.join("etc/fstab"));
    let py = ctx.here.join("switch.py");
    let units = rootfs.join("usr/lib/systemd/system");
    let args = ["python3", s(&py), "plan", s(&ua), s(&ub), s(&units), s(&fa), s(&fb)];
    let o = run(cmd(&args).arg(&active_json));
    let plan = match serde_json::from_str::<Value>(&o.stdout) {
        Ok(v) if o.ok => Plan { json: o.out(), v },
        _ => return Err(o.all()),
    };
    let mut log = format!("plan: {}\n", plan.json);
    // l. 1712-1729: stop.
    systemctl(c, "stop", &plan.units("stop"), &mut log);
    activate(ctx, c, a, b);
    // l. 1855-1861: reset-failed, daemon-reload.
    log.push_str(&c.in_c(60, &["systemctl", "reset-failed"]).all());
    log.push_str(&c.in_c(60, &["systemctl", "daemon-reload"]).all());
    // l. 1933-1956: a unit to reload that is no longer active is started
    // instead; l. 1958-2007: reload.
    let mut start = plan.units("start");
    for u in plan.units("reload") {
        if c.ok(&["systemctl", "-q", "is-active", &u]) {
            log.push_str(&c.in_c(120, &["systemctl", "reload", &u]).all());
        } else {
            start.push(u);
        }
    }
    // l. 2009-2031: restart; l. 2037-2064: start.
    systemctl(c, "restart", &plan.units("restart"), &mut log);
    systemctl(c, "start", &start, &mut log);
    let _ = fs::write(&sw.log, log);
    Ok(plan)
}

/// "activate": the new units and /etc (what the activation script and the
/// /etc/systemd/system symlink do on NixOS), the new store paths.
fn activate(ctx: &Ctx, c: &Container, a: &Path, b: &Path) {
    let sd = a.join("../systemd-system");
    for n in fs::read_dir(&sd).into_iter().flatten().flatten() {
        let p = n.path();
        let _ = if p.is_dir() && !p.is_symlink() {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        };
    }
    let rootfs = ctx.rootfs_cache.join("trixie");
    cp(&[
        "-a",
        &format!("{}/etc/systemd/system/.", s(&rootfs)),
        &format!("{}/", s(&sd)),
    ]);
    cp(&["-a", &format!("{}/etc/systemd/system/.", s(b)), &format!("{}/", s(&sd))]);
    write_fstab_container(&b.join("etc/fstab"), &a.join("etc/fstab.container"));
    let names: BTreeSet<String> = glob_dir(&a.join("etc"))
        .into_iter()
        .chain(glob_dir(&b.join("etc")))
        .collect();
    for name in names
        .iter()
        .filter(|n| !matches!(n.as_str(), "systemd" | "fstab" | "fstab.container"))
    {
        let (pa, pb) = (a.join("etc").join(name), b.join("etc").join(name));
        if pa.exists() {
            // Bound into the container from A's tree: its contents become B's.
            if pa.is_dir() {
                run(&mut cmd(&["find", s(&pa), "-mindepth", "1", "-delete"]));
                if pb.exists() {
                    cp(&["-a", &format!("{}/.", s(&pb)), &format!("{}/", s(&pa))]);
                }
            } else {
                let _ = fs::write(&pa, fs::read(&pb).unwrap_or_default());
            }
        } else {
            pipe(
                &mut cmd(&["tar", "-C", s(&b.join("etc")), "-c", name]),
                &mut c.in_c_cmd(60, &["tar", "-C", "/etc", "-x"]),
            );
        }
    }
    for p in glob_dir(&b.join("nix/store")) {
        if !c.ok(&["test", "-e", &format!("/nix/store/{p}")]) {
            let store = b.join("nix/store");
            pipe(
                &mut cmd(&["tar", "-C", s(&store), "-ch", &p]),
                &mut c.in_c_cmd(60, &["tar", "-C", "/nix/store", "-x"]),
            );
        }
    }
}

/// The plan line of the switch's log.
fn plan_line(sw: &Sw) -> String {
    fs::read_to_string(&sw.log)
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

/// Boots case `a` (check names start with `label`) over a fresh overlay root
/// on `lower` and lays out case `b`; None (after a FAIL) when A did not boot.
fn switch_begin(ctx: &mut Ctx, label: &str, a: &str, b: &str, lower: &Path, extra: Vec<String>) -> Option<Sw> {
    let sw_a = ctx.t.join(format!("switch/{a}/a/root"));
    let sw_b = ctx.t.join(format!("switch/{a}-to-{b}/b/root"));
    let overlay = ctx.t.join(format!("switch/{a}-to-{b}/overlay"));
    for d in [&sw_a, &sw_b, &overlay] {
        fresh_dir(d);
    }
    for (case, root) in [(a, &sw_a), (b, &sw_b)] {
        let o = render_config(ctx, &format!("case {case}"), root, "boot");
        if !o.ok {
            ctx.r.fail(&format!("{label}: lay out A and B"), &tail1(&o.all(), 3));
            return None;
        }
    }
    container_nix_store(&sw_a);
    container_nix_store(&sw_b);
    let spec = BootSpec {
        rootfs: "trixie",
        root: &sw_a,
        lower,
        overlay_root: &overlay,
        extra_binds: extra,
    };
    let c = Container::boot(ctx, spec);
    if c.leader.is_none() || c.prop("ActiveState", SOCKET) != "active" {
        let d = format!("{}; socket {}", c.state, c.prop("ActiveState", SOCKET));
        ctx.r.fail(&format!("{label}: A boots with its socket active"), &d);
        return None;
    }
    let log = ctx.t.join(format!("switch-{a}-to-{b}.log"));
    Some(Sw {
        c,
        a: sw_a,
        b: sw_b,
        overlay,
        log,
    })
}

/// Applies the switch; None after a FAIL when switch.py gave no plan.
fn switch(ctx: &mut Ctx, sw: &Sw, label: &str) -> Option<Plan> {
    match apply_switch(ctx, sw) {
        Ok(p) => {
            ctx.r.info(&format!("{label}: {}", plan_line(sw)));
            Some(p)
        }
        Err(e) => {
            ctx.r.fail(&format!("{label}: switch.py plan"), &e);
            None
        }
    }
}

fn log_tail(sw: &Sw, n: usize) -> String {
    tail1(&fs::read_to_string(&sw.log).unwrap_or_default(), n)
}

pub(crate) fn part(ctx: &mut Ctx) {
    let Some((_ev, bin)) = boot_prereqs(ctx, "switch") else {
        return;
    };
    let py = ctx.here.join("switch.py");
    let out = run(&mut cmd(&["python3", s(&py), "selftest"])).all();
    let _ = fs::write(ctx.t.join("switch-selftest.out"), &out);
    ctx.r.absorb(&out);
    if !out.lines().any(|l| l.starts_with("PASS ")) {
        ctx.r.fail("switch: switch.py selftest", &tail(&out, 3));
    }
    let dir = ctx.t.join("switch-demo");
    let Ok(d) = demo(ctx, &bin, &dir, "switch: demo lower store") else {
        return;
    };
    switch_socket(ctx, &d);
    switch_disable(ctx, &d);
    switch_lower_change(ctx, &bin);
}

/// Only socket.path and socket.mode change.
fn switch_socket(ctx: &mut Ctx, d: &Demo) {
    let (label, alt, top) = ("switch socket-only", "/run/snix-lower-store-alt/socket", d.top.as_str());
    let lower = d.dir.join("lower");
    let Some(sw) = switch_begin(
        ctx,
        label,
        "second-store-bind",
        "second-store-bind-socket",
        &lower,
        vec![],
    ) else {
        return;
    };
    let c = &sw.c;
    // The daemon is running when the switch comes (as in the VM test).
    c.in_c(
        60,
        &[
            "nix-store",
            "--store",
            "unix:///run/snix-lower-store/socket",
            "-q",
            "--references",
            top,
        ],
    );
    let Some(plan) = switch(ctx, &sw, label) else { return };
    // main.rs l. 656-660: a changed socket unit is not restarted itself; the
    // module changes a unit behind it (one the socket is PartOf=) so that its
    // stop or restart (l. 691-791) takes the socket along.
    let unit = fs::read_to_string(sw.b.join("etc/systemd/system/snix-lower-store.socket")).unwrap_or_default();
    let partof: String = unit
        .lines()
        .filter_map(|l| l.strip_prefix("PartOf="))
        .map(|v| format!("{v} "))
        .collect();
    let mut via = String::new();
    for u in std::iter::once(SOCKET).chain(partof.split_whitespace()) {
        if plan.has("stop", u) || plan.has("restart", u) {
            via.push_str(&format!(" {u}"));
        }
    }
    let name = format!("{label}: the plan takes the socket along");
    let pd = format!("stopped or restarted:{via} (the socket is PartOf= {partof})");
    let fd = format!("switch-to-configuration-ng would leave snix-lower-store.socket listening at the old path (PartOf= {partof}): {}", plan.json);
    ctx.r.check(!via.is_empty(), &name, &pd, &fd);
    let out = format!(
        "{} {} {}",
        c.in_c(60, &["stat", "-c", "%a", alt]).all(),
        c.prop("Listen", SOCKET),
        c.prop("ActiveState", SOCKET)
    );
    let ok = c.ok(&["test", "-S", alt]) && crate::proc::glob(&format!("660 *{alt}* active"), &out);
    let name = format!("{label}: the socket listens at the new path with the new mode");
    ctx.r.check(ok, &name, &out, &format!("{out}; {}", log_tail(&sw, 5)));
    let ok = !c.ok(&["test", "-e", "/run/snix-lower-store/socket"]);
    ctx.r.check(
        ok,
        &format!("{label}: nothing listens at the old path"),
        "",
        "/run/snix-lower-store/socket still exists",
    );
    socket_store_url(ctx, c, label, top);
}

/// Nix reads a lower path through the store URL of B; the overlay stays.
fn socket_store_url(ctx: &mut Ctx, c: &Container, label: &str, top: &str) {
    let url = c.store_url();
    let o = c.path_info(&url, top);
    let ok = url.contains("snix-lower-store-alt")
        && o.out() == top
        && c.ok(&["mountpoint", "-q", "/var/lib/snix-overlay/nix/store"]);
    let name = format!("{label}: Nix");
    if ok {
        let v = crate::proc::last_word(&c.in_c(60, &["nix", "--version"]).stdout);
        ctx.r.pass(
            &format!("{name} {v} reads a lower path through the new store-url; the overlay stays mounted"),
            &url,
        );
    } else {
        let d = format!("url {url}; {}; {}", o.out(), tail1(&o.stderr, 3));
        ctx.r
            .fail(&format!("{name} reads a lower path through the new store-url"), &d);
    }
}

/// services.snix-lower-store.enable = false.
fn switch_disable(ctx: &mut Ctx, d: &Demo) {
    let (label, top) = ("switch disable", d.top.as_str());
    let lower = d.dir.join("lower");
    let Some(sw) = switch_begin(
        ctx,
        label,
        "second-store-bind",
        "second-store-bind-disabled",
        &lower,
        vec![],
    ) else {
        return;
    };
    let c = &sw.c;
    let url = c.store_url();
    let (built, _) = nix_build(c, "trixie", &url, &build_expr("nl-switch-disable", top));
    let Some(plan) = switch(ctx, &sw, label) else { return };
    let missing: String = [SOCKET, IMPORT, OVERLAY, LOWER]
        .iter()
        .filter(|u| !plan.has("stop", u))
        .map(|u| format!(" {u}"))
        .collect();
    let name = format!("{label}: the plan stops the socket, the import and both mounts");
    if missing.is_empty() {
        ctx.r.pass(&format!("{name} (main.rs l. 1404-1413, 1525-1528)"), "");
    } else {
        ctx.r.fail(&name, &format!("not stopped:{missing}; {}", plan.json));
    }
    let out = format!(
        "{}/{} {}",
        c.prop("LoadState", SOCKET),
        c.prop("ActiveState", SOCKET),
        c.prop("ActiveState", "snix-lower-store.service")
    );
    let ok = out == "not-found/inactive inactive" && !c.ok(&["test", "-e", "/run/snix-lower-store/socket"]);
    let name = format!("{label}: no socket unit, nothing listening, no daemon");
    ctx.r.check(ok, &name, &out, &format!("{out}; {}", log_tail(&sw, 5)));
    let ok = !c.ok(&["mountpoint", "-q", "/var/lib/snix-overlay/nix/store"])
        && !c.ok(&["mountpoint", "-q", "/var/lib/snix-overlay/lower"]);
    let mounts = if ok {
        String::new()
    } else {
        crate::proc::oneline(
            &c.in_c(
                60,
                &["findmnt", "-n", "-o", "TARGET,FSTYPE", "-R", "/var/lib/snix-overlay"],
            )
            .all(),
        )
    };
    ctx.r.check(
        ok,
        &format!("{label}: the overlay and the lower are unmounted"),
        "",
        &mounts,
    );
    let ok = !c.ok(&["test", "-e", "/etc/snix-lower-store/store-url"]);
    let left = if ok { String::new() } else { c.store_url() };
    ctx.r.check(
        ok,
        &format!("{label}: /etc/snix-lower-store/store-url is gone"),
        "",
        &left,
    );
    let base = built.rsplit('/').next().unwrap_or("");
    let ok = !built.is_empty() && sw.overlay.join("upper").join(base).is_file();
    let upper: String = glob_dir(&sw.overlay.join("upper"))
        .iter()
        .map(|n| format!("{n} "))
        .collect();
    let name = format!("{label}: what was built stays in the upper layer");
    ctx.r
        .check(ok, &name, &built, &format!("built '{built}'; upper: {upper}"));
}

/// The InvocationID and ActiveEnterTimestampMonotonic of `units`.
fn stamps(c: &Container, units: &[&str]) -> Vec<(String, i64)> {
    units
        .iter()
        .map(|u| {
            (
                c.prop("InvocationID", u),
                c.prop("ActiveEnterTimestampMonotonic", u).parse().unwrap_or(0),
            )
        })
        .collect()
}

/// The lower change (issue 21 part 1): A on lower A (the demo store), B the
/// same with lower.device at lower B (A without G), both with
/// lower.onBrokenPaths = "invalidate". Lower B is bound at
/// /srv/lower-image-b from the boot on (a running nspawn container cannot
/// get a new bind); only the configuration names it. Nix 2.26 builds X on G
/// under A; the switch must remount the lower and the overlay, re-run the
/// import on B and the reconcile after them, which invalidates X.
fn switch_lower_change(ctx: &mut Ctx, bin: &Path) {
    let label = "switch lower-change";
    let (a, b) = (ctx.t.join("swl-a"), ctx.t.join("swl-b"));
    let Ok(g) = rot_lowers(ctx, bin, &a, &b, label) else {
        return;
    };
    let reg = fs::read_to_string(b.join("registration")).unwrap_or_default();
    let top = reg.lines().next().unwrap_or("").to_string();
    let extra = vec![format!("--bind-ro={}/lower:/srv/lower-image-b", s(&b))];
    let (ca, cb) = ("second-store-bind-lower-a", "second-store-bind-lower-b");
    let Some(sw) = switch_begin(ctx, label, ca, cb, &a.join("lower"), extra) else {
        return;
    };
    let c = &sw.c;
    let url = c.store_url();
    let (x, err) = nix_build(c, "trixie", &url, &build_expr("nl-switch-lower-x", &g));
    let refs = c
        .in_c(60, &["nix-store", "--store", &url, "-q", "--references", &x])
        .stdout;
    let rc_state = c.prop("ActiveState", RECONCILE);
    if rc_state == "active" && !x.is_empty() && refs.lines().any(|r| r == g) {
        let v = crate::proc::last_word(&c.in_c(60, &["nix", "--version"]).stdout);
        let name = format!("{label}: A: reconcile active; Nix {v} built X on G (a path lower B lacks)");
        ctx.r.pass(&name, &format!("X={x} G={g}"));
    } else {
        ctx.r.fail(
            &format!("{label}: A: X built on G"),
            &format!("reconcile {rc_state}; {}", tail1(&err, 3)),
        );
        return;
    }
    let units = [LOWER, OVERLAY, IMPORT, RECONCILE];
    let before = stamps(c, &units);
    let n = rot_journal(c).lines().count();
    let Some(plan) = switch(ctx, &sw, label) else { return };
    lower_change_plan(ctx, &sw, &plan, label);
    lower_change_order(ctx, &sw, &before, label);
    lower_change_state(ctx, &sw, n, &url, &g, &x, &top);
}

/// main.rs l. 517: the lower's What= changed -> restart; the import's unit
/// changed with it: stopped before the activation and started after it
/// (l. 691-791), or restarted.
fn lower_change_plan(ctx: &mut Ctx, _sw: &Sw, plan: &Plan, label: &str) {
    let mut out = String::new();
    if !plan.has("restart", LOWER) {
        out.push_str(&format!(" {LOWER} not restarted (l. 517)"));
    }
    if !((plan.has("stop", IMPORT) && plan.has("start", IMPORT)) || plan.has("restart", IMPORT)) {
        out.push_str(&format!(
            " {IMPORT} neither stopped and started nor restarted (l. 691-791)"
        ));
    }
    let name = format!("{label}: the plan restarts the lower's mount");
    if out.is_empty() {
        let full = format!("{name} (its What= changed: main.rs l. 517) and stops and starts the import (l. 691-791)");
        ctx.r.pass(&full, &plan.json);
    } else {
        ctx.r.fail(&name, &format!("{out}; {}", plan.json));
    }
}

/// What actually ran again after the switch began, in order: the overlay
/// and the import each after the new lower; the reconcile after both.
fn lower_change_order(ctx: &mut Ctx, sw: &Sw, before: &[(String, i64)], label: &str) {
    let c = &sw.c;
    let units = [LOWER, OVERLAY, IMPORT, RECONCILE];
    let after = stamps(c, &units);
    let mut out = String::new();
    for (i, u) in units.iter().enumerate() {
        let st = c.prop("ActiveState", u);
        if after[i].0 == before[i].0 || after[i].1 <= before[i].1 || st != "active" {
            out.push_str(&format!(" {u} ({st}, not re-run)"));
        }
    }
    let at: Vec<i64> = after.iter().map(|x| x.1).collect();
    let ordered = at[0] <= at[1] && at[0] <= at[2] && at[1] <= at[3] && at[2] <= at[3];
    if out.is_empty() && ordered {
        ctx.r.pass(&format!("{label}: the lower, then the overlay and the import, then the reconcile all ran again after the switch"), "");
    } else {
        let why = if out.is_empty() {
            format!("order {} {} {} {}", at[0], at[1], at[2], at[3])
        } else {
            out
        };
        let d = format!(
            "{why}; {} {}",
            log_tail(sw, 5),
            failed_journal(c, &format!("{IMPORT} {RECONCILE}"))
        );
        ctx.r.fail(
            &format!("{label}: lower, overlay, import and reconcile re-run in order"),
            &d,
        );
    }
}

/// After the lower change: X invalidated by the reconcile on B, G not
/// valid, --verify clean, the overlay over lower B, the socket serving B.
fn lower_change_state(ctx: &mut Ctx, sw: &Sw, n: usize, url: &str, g: &str, x: &str, top: &str) {
    let (label, c) = ("switch lower-change", &sw.c);
    let journal: String = rot_journal(c).lines().skip(n).map(|l| format!("{l}\n")).collect();
    let ok = journal.contains(x) && !c.ok(&["nix-store", "--store", url, "--check-validity", x]) && !c.in_upper(x);
    let name = format!("{label}: the reconcile on B invalidated X");
    if ok {
        ctx.r.pass(
            &format!("{name} (named in its journal), gone from the upper layer"),
            &summary(&journal, true),
        );
    } else {
        ctx.r.fail(&name, &tail1(&journal, 5));
    }
    let o = c.path_info(url, g);
    let out = o.all();
    let name = format!("{label}: Nix 2.26: nix path-info G");
    if !o.ok && out.contains("is not valid") {
        ctx.r.pass(&format!("{name} says it is not valid"), &tail(&out, 1));
    } else {
        ctx.r.fail(&format!("{name} fails as not valid"), &out);
    }
    let o = c.in_c(60, &["nix-store", "--store", url, "--verify"]);
    let out = o.all();
    let ok = o.ok && !out.contains("disappeared") && !out.contains("error");
    ctx.r.check(
        ok,
        &format!("{label}: Nix 2.26 nix-store --verify finds nothing to repair"),
        "",
        &tail1(&out, 4),
    );
    lower_change_mounts(ctx, c, g, top);
    socket_serves_b(ctx, c, url, top);
}

/// The overlay is mounted over lower B (systemd shows a bind mount's What=
/// as the device: the inodes are compared).
fn lower_change_mounts(ctx: &mut Ctx, c: &Container, g: &str, top: &str) {
    let (label, lower) = ("switch lower-change", "/var/lib/snix-overlay/lower");
    // systemd shows a bind mount's What= as the device: compare the inodes.
    let ino: Vec<String> = c
        .in_c(60, &["stat", "-c", "%d:%i", lower, "/srv/lower-image-b"])
        .stdout
        .lines()
        .map(String::from)
        .collect();
    let (i0, i1) = (
        ino.first().cloned().unwrap_or_default(),
        ino.get(1).cloned().unwrap_or_default(),
    );
    let fm = c
        .in_c(
            60,
            &[
                "findmnt",
                "-n",
                "-o",
                "FSTYPE,OPTIONS",
                "/var/lib/snix-overlay/nix/store",
            ],
        )
        .out();
    let q = |v: &str| if v.is_empty() { "?".to_string() } else { v.to_string() };
    let out = format!("lower {}, lower B {}; {fm}", q(&i0), q(&i1));
    let base = |p: &str| p.trim_start_matches("/nix/store/").to_string();
    let ok = !i0.is_empty()
        && i0 == i1
        && crate::proc::glob(&format!("*overlay *lowerdir={lower}/nix/store*"), &out)
        && !c.ok(&["test", "-e", &format!("{lower}/nix/store/{}", base(g))])
        && c.ok(&["test", "-e", &format!("/var/lib/snix-overlay/nix/store/{}", base(top))])
        && !c.ok(&["test", "-e", &format!("/var/lib/snix-overlay/nix/store/{}", base(g))]);
    let name = format!("{label}: the overlay is mounted over lower B");
    if ok {
        ctx.r
            .pass(&format!("{name} (G absent from the lower and the merged store)"), &out);
    } else {
        let all = crate::proc::oneline(&c.in_c(60, &["findmnt", "-n", "-R", "/var/lib/snix-overlay"]).all());
        ctx.r.fail(&name, &format!("{out}; {all}"));
    }
}

/// The socket listens and serves a path of B.
fn socket_serves_b(ctx: &mut Ctx, c: &Container, url: &str, top: &str) {
    let label = "switch lower-change";
    let o = c.in_c(60, &["nix-store", "--store", url, "-q", "--references", top]);
    let st = c.prop("ActiveState", SOCKET);
    let ok = o.ok && c.ok(&["test", "-S", "/run/snix-lower-store/socket"]) && st == "active";
    ctx.r.check(
        ok,
        &format!("{label}: the socket listens and serves a path of B"),
        top,
        &format!("{st}; {}", o.all()),
    );
}
