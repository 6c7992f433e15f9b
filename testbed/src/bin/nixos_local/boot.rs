//! Part boot: the second-store units booted under systemd 257 as PID 1
//! (systemd-nspawn of the trixie root), real Nix 2.26 (trixie) and 2.34
//! (sid's, in the container's mount namespace) querying, socket-activating
//! and building through the merged store; then a changed configuration over
//! the same upper layer; then (issue 14, image.rs) lower.index = "image".
//!
//! Invariants: a boot counts as good when running, or degraded only by the
//! Debian root's own units (none of ours failed); what was built before the
//! configuration changed is still in the merged store after it.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::nspawn::{BootSpec, Container};
use crate::proc::{argv, cmd, fresh_dir, oneline, run, s, tail, tail1, timeout};
use crate::render::render_config;
use crate::Ctx;

/// A lower store made by `demo`: its top path with references, and those.
pub(crate) struct Demo {
    pub(crate) dir: PathBuf,
    pub(crate) top: String,
    pub(crate) refs: Vec<String>,
}

/// `bin demo --dir DIR --check`, the registration beside the store, all
/// readable; Err after a FAIL named `check`.
pub(crate) fn demo(ctx: &mut Ctx, bin: &Path, dir: &Path, check: &str) -> Result<Demo, ()> {
    let o = run(&mut timeout(120, &[s(bin), "demo", "--dir", s(dir), "--check"]));
    if !o.ok {
        ctx.r.fail(check, &tail(&o.all(), 3));
        return Err(());
    }
    let _ = fs::copy(dir.join("registration"), dir.join("lower/registration"));
    run(&mut cmd(&["chmod", "-R", "a+rX", s(dir)]));
    let reg = dir.join("registration");
    let pick = run(&mut cmd(&[
        "python3",
        s(&ctx.repo.join("tests/systemd/sdtest.py")),
        "reg-pick",
        s(&reg),
    ]))
    .stdout;
    let pick: Vec<String> = pick.lines().map(String::from).collect();
    Ok(Demo {
        dir: dir.to_path_buf(),
        top: pick.get(1).cloned().unwrap_or_default(),
        refs: pick.get(2..).map(|r| r.to_vec()).unwrap_or_default(),
    })
}

/// The failed units of the container, space-separated.
pub(crate) fn failed_units(c: &Container) -> String {
    let o = c.in_c(60, &["systemctl", "--failed", "--plain", "--no-legend"]);
    o.stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|u| format!("{u} "))
        .collect()
}

/// The last journal lines of the failed units of ours among `units` (the
/// reconcile's by its identifier: a short-lived process's lines can lose
/// their unit).
pub(crate) fn failed_journal(c: &Container, units: &str) -> String {
    let mut out = String::new();
    for u in units.split_whitespace() {
        if u == "snix-lower-store-reconcile.service" {
            out.push_str(&tail1(&rot_journal(c), 6));
        } else if u.starts_with("snix") {
            out.push_str(&c.journal(u, 4));
        }
    }
    out
}

/// The reconcile's journal (by its identifier).
pub(crate) fn rot_journal(c: &Container) -> String {
    c.in_c(
        60,
        &[
            "journalctl",
            "-b",
            "-t",
            "snix-lower-store-reconcile",
            "--no-pager",
            "-o",
            "cat",
        ],
    )
    .stdout
}

/// A derivation whose builder writes `input` (a store path) into $out.
pub(crate) fn build_expr(name: &str, input: &str) -> String {
    format!(
        "derivation {{ name = \"{name}\"; system = builtins.currentSystem; builder = \"/bin/sh\"; args = [ \"-c\" \"echo ${{builtins.storePath \"{input}\"}} > $out\" ]; }}"
    )
}

/// nix-build of `expr` through `url` with Nix `client`; the output path
/// (last stdout line) and stderr.
pub(crate) fn nix_build(c: &Container, client: &str, url: &str, expr: &str) -> (String, String) {
    let args = [
        "nix-build",
        "--store",
        url,
        "--option",
        "sandbox",
        "false",
        "--option",
        "substituters",
        "",
    ];
    let args: Vec<&str> = args.iter().copied().chain(["--no-out-link", "-E", expr]).collect();
    let o = c.nixc(client, &args);
    (tail(&o.stdout, 1), o.stderr)
}

/// Whether `built` is in the upper layer (not the lower) and names `input`.
pub(crate) fn built_in_upper(c: &Container, built: &str, input: &str) -> bool {
    let base = built.rsplit('/').next().unwrap_or("");
    !built.is_empty()
        && c.ok(&["test", "-f", &format!("/var/lib/snix-overlay/upper/{base}")])
        && !c.ok(&["test", "-e", &format!("/var/lib/snix-overlay/lower/nix/store/{base}")])
        && c.ok(&["grep", "-qx", input, &format!("/var/lib/snix-overlay/nix/store/{base}")])
}

/// The boot check: systemd as PID 1 reached running (or degraded by units
/// not ours).
pub(crate) fn check_booted(ctx: &mut Ctx, c: &Container, label: &str, t0: Instant) {
    let failed = failed_units(c);
    let name = format!("{label}: systemd as PID 1 boots the rendered units");
    let secs = t0.elapsed().as_secs();
    match c.state.as_str() {
        "running" => ctx.r.pass(&name, &format!("{secs}s, running")),
        "degraded" if failed.contains("snix") => ctx.r.fail(
            &name,
            &format!("degraded, failed: {failed}; {}", failed_journal(c, &failed)),
        ),
        "degraded" => ctx
            .r
            .pass(&name, &format!("{secs}s, degraded by the root's own units: {failed}")),
        st => ctx.r.fail(&name, &format!("is-system-running: {st}; failed: {failed}")),
    }
}

pub(crate) fn have_nspawn() -> bool {
    crate::proc::which("systemd-nspawn").is_some() && crate::proc::which("nsenter").is_some()
}

/// The prerequisites of a part that boots: nspawn, eval.json, a binary.
pub(crate) fn boot_prereqs(ctx: &mut Ctx, part: &str) -> Option<(serde_json::Value, PathBuf)> {
    if !have_nspawn() {
        ctx.r.skip_or_fail(
            part,
            "systemd-nspawn or nsenter missing (apt-get install systemd-container)",
        );
        return None;
    }
    let ev = ctx.eval_json(part)?;
    let bin = ctx.unit_bin();
    if !crate::proc::is_exec(&bin) {
        let why = format!(
            "no binary: {} (package part) nor {}",
            ctx.pkg_bin.display(),
            ctx.bin.display()
        );
        ctx.r.skip_or_fail(part, &why);
        return None;
    }
    Some((ev, bin))
}

pub(crate) fn part(ctx: &mut Ctx) {
    let Some((ev, bin)) = boot_prereqs(ctx, "boot") else {
        return;
    };
    let Ok(demo) = demo(ctx, &bin, &ctx.t.join("demo"), "boot: demo lower store") else {
        return;
    };
    let overlay_root = ctx.t.join("overlay-trixie");
    fresh_dir(&overlay_root);
    let mut first_built: Vec<String> = vec![];
    for cfg in ["second-store-bind", "second-store-bind-changed"] {
        let label = format!("boot trixie {cfg}");
        let root = ctx.t.join(format!("boot/trixie-{cfg}/root"));
        let _ = fs::create_dir_all(&root);
        let o = render_config(ctx, &format!("case {cfg}"), &root, "boot");
        if !o.ok {
            ctx.r.fail(&format!("{label}: lay out the units"), &tail1(&o.all(), 3));
            continue;
        }
        let t0 = Instant::now();
        let lower = demo.dir.join("lower");
        let spec = BootSpec {
            rootfs: "trixie",
            root: &root,
            lower: &lower,
            overlay_root: &overlay_root,
            extra_binds: vec![],
        };
        let mut c = Container::boot(ctx, spec);
        check_booted(ctx, &c, &label, t0);
        if c.leader.is_some() {
            let sock = ev["configs"][format!("case {cfg}")]["snix"]["socketPath"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let built = booted_checks(ctx, &c, &label, &sock, &demo);
            let url = c.store_url();
            for p in &first_built {
                let o = c.path_info(&url, p);
                let name = format!("{label}: what was built before the change is still in the merged store");
                ctx.r.check(o.out() == *p, &name, p, &format!("{p}: {}", o.out()));
            }
            first_built = built;
        }
        c.stop();
    }
    crate::image::boot_image(ctx, &bin);
}

/// The checks on one booted configuration (`label`, socket path `socket`);
/// returns the outputs built through the merged store.
fn booted_checks(ctx: &mut Ctx, c: &Container, label: &str, socket: &str, demo: &Demo) -> Vec<String> {
    let url = c.store_url();
    for unit in [
        "var-lib-snix\\x2doverlay-lower.mount",
        "var-lib-snix\\x2doverlay-nix-store.mount",
        "snix-lower-store-import.service",
        "snix-lower-store.socket",
    ] {
        let st = c.prop("ActiveState", unit);
        let detail = format!("{st}; {}", c.journal(unit, 4));
        ctx.r
            .check(st == "active", &format!("{label}: {unit} active at boot"), "", &detail);
    }
    let out = c
        .in_c(
            60,
            &["findmnt", "-n", "-o", "OPTIONS", "/var/lib/snix-overlay/nix/store"],
        )
        .out();
    let ok = out.contains("lowerdir=/var/lib/snix-overlay/lower/nix/store")
        && out.contains("upperdir=/var/lib/snix-overlay/upper");
    let name = format!("{label}: the overlay is mounted from /etc/fstab with the paths check-mount compares");
    ctx.r.check(ok, &name, "", &format!("options: {out}"));
    let dir = Path::new(socket).parent().map(|p| s(p).to_string()).unwrap_or_default();
    let ok = c.ok(&["test", "-S", socket]);
    let pd = if ok {
        c.in_c(60, &["stat", "-c", "%a %G", socket]).out()
    } else {
        String::new()
    };
    let fd = if ok {
        String::new()
    } else {
        c.in_c(60, &["ls", "-la", &dir]).all()
    };
    ctx.r.check(ok, &format!("{label}: listening at {socket}"), &pd, &fd);
    let args = [
        "systemctl",
        "show",
        "-p",
        "EnvironmentFiles",
        "-p",
        "RequiresMountsFor",
        "--value",
        "snix-lower-store.service",
    ];
    let out = oneline(&c.in_c(60, &args).out());
    let ok = !out.contains("/etc/snix-lower-store/env") && !out.contains("/srv/lower");
    let name = format!("9 {label}: systemd's view of snix-lower-store.service keeps none of the package's defaults");
    ctx.r.check(ok, &name, &out, &out);
    let mut built = vec![];
    for client in ["trixie", "sid"] {
        built.push(client_checks(ctx, c, label, socket, &url, client, demo));
    }
    built
}

/// A Nix client's view of one booted configuration.
struct Client<'a> {
    c: &'a Container,
    label: &'a str,
    url: &'a str,
    client: &'a str,
    nixv: String,
}

/// Nix `client` through the merged store and straight to the daemon; the
/// output it built.
fn client_checks(
    ctx: &mut Ctx,
    c: &Container,
    label: &str,
    socket: &str,
    url: &str,
    client: &str,
    demo: &Demo,
) -> String {
    let cl = Client {
        c,
        label,
        url,
        client,
        nixv: ctx.nixv(client),
    };
    let top = demo.top.as_str();
    path_info(ctx, &cl, top);
    daemon_refs(ctx, &cl, socket, demo);
    let got = sorted_lines(&c.nixc(client, &["nix-store", "--store", url, "-qR", top]).stdout);
    let mut want = demo.refs.clone();
    want.push(top.to_string());
    want.sort();
    want.dedup();
    let name = format!("{label}: {} nix-store -qR through the merged store", cl.nixv);
    let (pd, fd) = (format!("{} paths", got.len()), format!("got {}", got.join(" ")));
    ctx.r.check(got == want, &name, &pd, &fd);
    // A build whose input is a lower path: valid only through the daemon;
    // the output lands in the upper layer.
    let drv: String = label
        .chars()
        .map(|ch| {
            if ch.is_ascii_lowercase() || ch.is_ascii_digit() {
                ch
            } else {
                '-'
            }
        })
        .collect();
    let (built, err) = nix_build(c, client, url, &build_expr(&format!("nl-{drv}-{client}"), top));
    let name = format!(
        "{label}: {} builds from a lower input through the merged store",
        cl.nixv
    );
    if built_in_upper(c, &built, top) {
        ctx.r.pass(&format!("{name}; the output is in the upper layer"), &built);
    } else {
        ctx.r.fail(&name, &tail1(&err, 4));
    }
    built
}

fn path_info(ctx: &mut Ctx, cl: &Client, top: &str) {
    let t0 = Instant::now();
    let args = argv(
        "nix --extra-experimental-features nix-command path-info --json --store",
        &[cl.url, top],
    );
    let out = cl.c.nixc(cl.client, &args).all();
    let name = format!(
        "{}: {} path-info of a lower path through the merged store",
        cl.label, cl.nixv
    );
    if out.contains("narHash") {
        ctx.r.pass(&name, &format!("{}ms", t0.elapsed().as_millis()));
    } else {
        let args = argv(
            "journalctl -b -u snix-lower-store.service -u snix-lower-store.socket --no-pager -o cat",
            &[],
        );
        let journal = tail1(&cl.c.in_c(60, &args).stdout, 6);
        let daemon = cl.c.prop("ActiveState", "snix-lower-store.service");
        ctx.r.fail(
            &name,
            &format!("daemon {daemon}; {}; journal: {journal}", tail1(&out, 3)),
        );
    }
}

/// Straight to the daemon (the merged store may answer from its own
/// database what an earlier boot registered): the socket starts it.
fn daemon_refs(ctx: &mut Ctx, cl: &Client, socket: &str, demo: &Demo) {
    let store = format!("unix://{socket}");
    let got = sorted_lines(
        &cl.c
            .nixc(
                cl.client,
                &["nix-store", "--store", &store, "-q", "--references", &demo.top],
            )
            .all(),
    );
    let mut want = demo.refs.clone();
    want.sort();
    let active = cl.c.prop("ActiveState", "snix-lower-store.service");
    let name = format!(
        "{}: {} asks the daemon at {socket} directly; the socket activated it",
        cl.label, cl.nixv
    );
    if got == want && active == "active" {
        ctx.r.pass(&name, "");
    } else {
        let journal = cl.c.journal("snix-lower-store.service", 4);
        ctx.r.fail(
            &name,
            &format!("daemon {active}; got: {}; journal: {journal}", got.join(" ")),
        );
    }
}

/// The lines of `s`, sorted.
pub(crate) fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().filter(|l| !l.is_empty()).map(String::from).collect();
    v.sort();
    v
}
