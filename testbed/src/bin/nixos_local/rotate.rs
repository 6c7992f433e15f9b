//! Part rotate (issue 21, image rotation): snix-lower-store-reconcile.service
//! in the configurations of rotate.nix (tests/nixos-local/rotate-checks.py:
//! its place among the units, sandbox, command line, the system store's
//! refusal of "refuse"), then a rotation end to end under systemd as PID 1
//! with Nix 2.26 and 2.34 over one upper layer: boot on lower A and build X
//! on G; boot on B = A without G: refused naming X, settled as the error
//! says; grow-only back to A; B again with the unit rendered for "invalidate".
//!
//! Invariants: lower B is byte-identical afterwards; each step that cannot
//! boot fails by name and ends the scenario (later steps depend on it).

use std::fs;
use std::path::Path;

use crate::boot::{build_expr, nix_build, rot_journal};
use crate::nspawn::{BootSpec, Container};
use crate::proc::{argv, cmd, fresh_dir, glob_dir, run, s, tail1, timeout};
use crate::render::render_config;
use crate::rootfs::{in_rootfs, NIX_STORE_ARGS};
use crate::Ctx;

const RECONCILE: &str = "snix-lower-store-reconcile.service";

pub(crate) fn part(ctx: &mut Ctx) {
    let mut args: Vec<&str> = vec!["nix-instantiate"];
    args.extend(NIX_STORE_ARGS);
    args.extend([
        "--read-write-mode",
        "--eval",
        "--strict",
        "--json",
        "/mnt/src/tests/nixos-local/rotate.nix",
    ]);
    args.extend(["--arg", "repo", "/mnt/src", "--arg", "nixpkgs", "/mnt/nixpkgs"]);
    let o = run(&mut in_rootfs(ctx, "trixie", &args));
    let json = ctx.t.join("rotate.json");
    let _ = fs::write(&json, &o.stdout);
    if !o.ok {
        ctx.r.fail(
            "21 rotate: evaluate tests/nixos-local/rotate.nix",
            &tail1(&o.stderr, 20),
        );
        return;
    }
    let py = ctx.here.join("rotate-checks.py");
    let out = run(&mut cmd(&["python3", s(&py), s(&json), s(&ctx.t.join("nixroot"))])).all();
    if ctx.r.absorb(&out) == 0 {
        ctx.r
            .fail("21 rotate: checks", if out.is_empty() { "no output" } else { &out });
    }
    let bin = ctx.unit_bin();
    let help = run(&mut cmd(&[s(&bin), "reconcile", "--help"])).stdout;
    if !ctx.t.join("eval.json").is_file() || !crate::boot::have_nspawn() {
        ctx.r.skip_or_fail(
            "21 rotate boot",
            "needs the eval part's result (run: eval rotate) and systemd-nspawn",
        );
    } else if !help.contains("--on-broken") {
        let why = format!(
            "{} has no reconcile command (SNIX_LOWER_STORE_BIN: a build with issue 21's reconcile)",
            bin.display()
        );
        ctx.r.skip_or_fail("21 rotate boot", &why);
    } else {
        rotate_boot(ctx, &bin);
    }
}

/// Registration entries: path, hash, size, deriver, count, references.
fn entries(text: &str) -> Vec<Vec<String>> {
    let lines: Vec<&str> = text.split('\n').collect();
    let (mut out, mut i) = (vec![], 0);
    while i + 4 < lines.len() && !lines[i].is_empty() {
        let n: usize = lines[i + 4].parse().unwrap_or(0);
        let end = (i + 5 + n).min(lines.len());
        out.push(lines[i..end].iter().map(|l| l.to_string()).collect());
        i += 5 + n;
    }
    out
}

fn write_entries(p: &Path, es: &[&Vec<String>]) {
    let text: String = es.iter().map(|e| format!("{}\n", e.join("\n"))).collect();
    let _ = fs::write(p, text);
}

/// From A's registration: drops the .drv (the demo store's declares an
/// output its hash does not give, which Nix's GC rejects) and derivers,
/// picks G (a path with references that nothing refers to); writes A's and
/// B's (A without G) registrations and returns G.
pub(crate) fn split_registration(a: &Path, b: &Path) -> Result<String, String> {
    let text = fs::read_to_string(a).map_err(|e| format!("{}: {e}", a.display()))?;
    let mut es: Vec<Vec<String>> = entries(&text).into_iter().filter(|e| !e[0].ends_with(".drv")).collect();
    let all = entries(&text);
    let referred: Vec<&String> = all
        .iter()
        .flat_map(|e| e[5..].iter().filter(move |r| **r != e[0]))
        .collect();
    for e in es.iter_mut() {
        e[3].clear();
    }
    let g = es
        .iter()
        .position(|e| e[5..].iter().any(|r| *r != e[0]) && !referred.contains(&&e[0]))
        .ok_or("no path with references that nothing refers to")?;
    write_entries(a, &es.iter().collect::<Vec<_>>());
    write_entries(
        b,
        &es.iter()
            .enumerate()
            .filter(|(i, _)| *i != g)
            .map(|(_, e)| e)
            .collect::<Vec<_>>(),
    );
    Ok(es[g][0].clone())
}

/// Lower A (the demo store, in `a`/lower) and lower B (A without G, in
/// `b`/lower), each with its registration; G, or Err after a FAIL labelled `l`.
pub(crate) fn rot_lowers(ctx: &mut Ctx, bin: &Path, a: &Path, b: &Path, l: &str) -> Result<String, ()> {
    let _ = fs::remove_dir_all(a);
    fresh_dir(b);
    let o = run(&mut timeout(120, &[s(bin), "demo", "--dir", s(a), "--check"]));
    if !o.ok {
        ctx.r
            .fail(&format!("{l}: demo lower store"), &crate::proc::tail(&o.all(), 3));
        return Err(());
    }
    let g = match split_registration(&a.join("registration"), &b.join("registration")) {
        Ok(g) => g,
        Err(e) => {
            ctx.r.fail(&format!("{l}: pick a path of A that nothing refers to"), &e);
            return Err(());
        }
    };
    for d in glob_dir(&a.join("lower/nix/store"))
        .iter()
        .filter(|d| d.ends_with(".drv"))
    {
        let _ = fs::remove_file(a.join("lower/nix/store").join(d));
    }
    let _ = fs::copy(a.join("registration"), a.join("lower/registration"));
    run(&mut cmd(&["cp", "-a", s(&a.join("lower")), s(&b.join("lower"))]));
    let gb = b.join("lower/nix/store").join(g.trim_start_matches("/nix/store/"));
    let gone = if gb.is_dir() && !gb.is_symlink() {
        fs::remove_dir_all(&gb)
    } else {
        fs::remove_file(&gb)
    };
    if let Err(e) = gone {
        ctx.r.fail(
            &format!("{l}: remove G from lower B"),
            &format!("{}: {e}", gb.display()),
        );
        return Err(());
    }
    let _ = fs::copy(b.join("registration"), b.join("lower/registration"));
    run(&mut cmd(&["chmod", "-R", "a+rX", s(a), s(b)]));
    Ok(g)
}

/// render.py points a stand-in's tool missing on this host at /usr/sbin;
/// the container's nix-store is /usr/bin/nix-store.
pub(crate) fn container_nix_store(root: &Path) {
    for p in glob_dir(&root.join("nix/store")) {
        let t = root.join("nix/store").join(p).join("bin/nix-store");
        if fs::read_link(&t).is_ok_and(|l| l == Path::new("/usr/sbin/nix-store")) {
            let _ = fs::remove_file(&t);
            let _ = std::os::unix::fs::symlink("/usr/bin/nix-store", &t);
        }
    }
}

/// The activation time of `unit` in ms.
fn rot_ms(c: &Container, unit: &str) -> i64 {
    let a: i64 = c.prop("InactiveExitTimestampMonotonic", unit).parse().unwrap_or(0);
    let b: i64 = c.prop("ActiveEnterTimestampMonotonic", unit).parse().unwrap_or(0);
    (b - a) / 1000
}

/// The last "reconcile: ..." summary in `journal` (up to a quote; with
/// `digit`, only one whose text starts with a digit).
pub(crate) fn summary(journal: &str, digit: bool) -> String {
    let prefix = "reconcile: ";
    let mut last = String::new();
    for l in journal.lines() {
        let mut rest = l;
        while let Some(i) = rest.find(prefix) {
            let m = &rest[i..];
            let end = m.find('"').unwrap_or(m.len());
            let starts_digit = m[prefix.len()..].starts_with(|c: char| c.is_ascii_digit());
            if !digit || starts_digit {
                last = m[..end].to_string();
            }
            rest = &m[prefix.len()..];
        }
    }
    last
}

/// The rotation scenario's state shared by its steps.
struct Rot<'a> {
    l: &'a str,
    root: &'a Path,
    overlay: &'a Path,
    g: String,
    x: String,
    url: String,
    expr: String,
}

impl Rot<'_> {
    fn boot(&self, ctx: &mut Ctx, lower: &Path, what: &str) -> Option<Container> {
        let spec = BootSpec {
            rootfs: "trixie",
            root: self.root,
            lower,
            overlay_root: self.overlay,
            extra_binds: vec![],
        };
        let c = Container::boot(ctx, spec);
        if c.leader.is_none() {
            ctx.r.fail(&format!("{}: boot on {what}", self.l), &c.state);
            return None;
        }
        Some(c)
    }
}

fn rotate_boot(ctx: &mut Ctx, bin: &Path) {
    let l = "21 rotate boot";
    let (a, b, overlay, root) = (
        ctx.t.join("rot-a"),
        ctx.t.join("rot-b"),
        ctx.t.join("rot-overlay"),
        ctx.t.join("rot/root"),
    );
    let _ = fs::remove_dir_all(ctx.t.join("rot"));
    fresh_dir(&overlay);
    let _ = fs::create_dir_all(&root);
    let Ok(g) = rot_lowers(ctx, bin, &a, &b, l) else { return };
    let o = render_config(ctx, "case second-store-bind", &root, "boot");
    if !o.ok {
        ctx.r.fail(&format!("{l}: lay out the units"), &tail1(&o.all(), 3));
        return;
    }
    container_nix_store(&root);
    let expr = build_expr("nl-rot-x", &g);
    let mut rot = Rot {
        l,
        root: &root,
        overlay: &overlay,
        g,
        x: String::new(),
        url: String::new(),
        expr,
    };
    if !step_a(ctx, &mut rot, &a.join("lower")) {
        return;
    }
    if !step_b(ctx, &rot, &b) {
        return;
    }
    if !step_a_again(ctx, &rot, &a.join("lower")) {
        return;
    }
    step_b_invalidate(ctx, &rot, &b.join("lower"));
}

/// 1. Lower A: X built on G.
fn step_a(ctx: &mut Ctx, rot: &mut Rot, lower: &Path) -> bool {
    let l = rot.l;
    let Some(c) = rot.boot(ctx, lower, "lower A") else {
        return false;
    };
    rot.url = c.store_url();
    let st = c.prop("ActiveState", RECONCILE);
    let j = rot_journal(&c);
    ctx.r.check(
        st == "active",
        &format!("{l}: lower A: the reconcile ran at boot"),
        &summary(&j, false),
        &format!("{st}; {}", tail1(&j, 4)),
    );
    let (x, err) = nix_build(&c, "trixie", &rot.url, &rot.expr);
    let refs = c
        .nixc("trixie", &["nix-store", "--store", &rot.url, "-q", "--references", &x])
        .stdout;
    if !x.is_empty() && refs.lines().any(|r| r == rot.g) {
        ctx.r.pass(
            &format!("{l}: lower A: X built on G, in the upper layer"),
            &format!("X={x} G={}", rot.g),
        );
    } else {
        ctx.r.fail(&format!("{l}: lower A: X built on G"), &tail1(&err, 3));
        return false;
    }
    rot.x = x;
    let o = c.nixc("trixie", &["nix-store", "--store", &rot.url, "--gc", "--print-dead"]);
    let name = format!("{l}: lower A: nix-store --gc --print-dead before the rotation");
    let dead = o.all().lines().filter(|x| x.contains("/nix/store")).count();
    ctx.r.check(o.ok, &name, &format!("{dead} dead"), &tail1(&o.all(), 2));
    true
}

/// 2. Lower B, without G: refused, then settled the way the error says.
fn step_b(ctx: &mut Ctx, rot: &Rot, b: &Path) -> bool {
    let (l, url, x) = (rot.l, rot.url.as_str(), rot.x.as_str());
    let t0 = std::time::Instant::now();
    let digest = crate::image::tree_digest(&b.join("lower"), &[]);
    let Some(mut c) = rot.boot(ctx, &b.join("lower"), "lower B") else {
        return false;
    };
    // The container's /var is fresh at every boot (--volatile=overlay), so
    // the import builds B's index from scratch; the upper layer and Nix's
    // database (/var/lib/snix-overlay, bound in) are kept.
    let n_b = entries(&fs::read_to_string(b.join("registration")).unwrap_or_default()).len();
    let ij = c
        .in_c(
            60,
            &[
                "journalctl",
                "-b",
                "-u",
                "snix-lower-store-import.service",
                "--no-pager",
                "-o",
                "cat",
            ],
        )
        .stdout;
    let ok = ij.contains(&format!("imported {n_b} entries"));
    let name = format!("{l}: lower B: the import indexed B ({n_b} paths");
    if ok {
        ctx.r.pass(
            &format!("{name}, G not among them)"),
            &format!("{}s", t0.elapsed().as_secs()),
        );
    } else {
        ctx.r.fail(&format!("{name})"), &tail1(&ij, 3));
    }
    let out = rot_journal(&c);
    let _ = fs::write(ctx.t.join("rot-journal-b.txt"), &out);
    let st = c.prop("ActiveState", RECONCILE);
    let ok = st == "failed"
        && out.contains(x)
        && out.contains("lower.onBrokenPaths = \"invalidate\"")
        && c.nixc("trixie", &["nix-store", "--store", url, "--check-validity", x])
            .ok;
    let name = format!("{l}: lower B, onBrokenPaths = refuse:");
    if ok {
        let pass = format!("{name} the reconcile fails naming X and how to proceed; X is left as it was");
        ctx.r.pass(&pass, &first_match(&out, "reconcile refused: ", '.'));
    } else {
        ctx.r.fail(
            &format!("{name} refused naming X"),
            &format!("state {st}; {}", tail1(&out, 6)),
        );
    }
    settle(ctx, &c, rot, &out);
    for client in ["trixie", "sid"] {
        b_client(ctx, &c, rot, client);
    }
    let _ = c.in_c(60, &["systemctl", "restart", RECONCILE]);
    let s_ = summary(&rot_journal(&c), false);
    let ok = s_.contains("nothing to do")
        && c.ok(&[
            "test",
            "-s",
            "/var/lib/snix-overlay/nix/var/nix/snix-lower-store-settled",
        ]);
    if ok {
        ctx.r.pass(
            &format!("{l}: lower B: settled: a restart on the same lower only compares"),
            &s_,
        );
    } else {
        ctx.r
            .fail(&format!("{l}: lower B: a restart on the same lower only compares"), &s_);
    }
    c.stop();
    let ok = crate::image::tree_digest(&b.join("lower"), &[]) == digest;
    ctx.r.check(
        ok,
        &format!("{l}: lower B is byte-identical afterwards"),
        "",
        &format!("{}/lower changed", b.display()),
    );
    true
}

/// The first `prefix...` in `text` up to `end` (grep -o 'prefix[^end]*' | head -n 1).
fn first_match(text: &str, prefix: &str, end: char) -> String {
    text.find(prefix)
        .map(|i| text[i..].split([end, '\n']).next().unwrap_or("").to_string())
        .unwrap_or_default()
}

/// As the refusal says: delete the paths it names through Nix, restart it.
fn settle(ctx: &mut Ctx, c: &Container, rot: &Rot, journal: &str) {
    let mut broken: Vec<String> = vec![];
    for l in journal.lines() {
        let mut rest = l;
        while let Some(i) = rest.find("broken (") {
            let m = &rest[i + 8..];
            let Some(close) = m.find("): /nix/store/") else { break };
            if !m[..close].chars().all(|ch| ch.is_ascii_lowercase() || ch == ' ') {
                rest = m;
                continue;
            }
            let p = &m[close + 3..];
            let end = p.find([' ', '"']).unwrap_or(p.len());
            broken.push(p[..end].to_string());
            rest = &p[end..];
        }
    }
    broken.sort();
    broken.dedup();
    let mut args = vec![
        "nix-store",
        "--store",
        rot.url.as_str(),
        "--delete",
        "--ignore-liveness",
    ];
    args.extend(broken.iter().map(String::as_str));
    let d = c.nixc("trixie", &args);
    let r = if d.ok {
        c.in_c(60, &["systemctl", "restart", RECONCILE]).all()
    } else {
        String::new()
    };
    let out = format!("{}{r}", d.all());
    let st = c.prop("ActiveState", RECONCILE);
    let j = rot_journal(c);
    let l = rot.l;
    if st == "active" {
        let name = format!("{l}: lower B: after deleting the paths it named ({}: X and its derivation) through Nix, systemctl restart settles it", broken.len());
        ctx.r.pass(&name, &summary(&j, false));
    } else {
        ctx.r.fail(
            &format!("{l}: lower B: after deleting X through Nix, the restart settles it"),
            &format!("{out}; {}", tail1(&j, 6)),
        );
    }
}

/// Lower B with Nix `client`: G and X invalid, --verify clean, a build
/// needing G fails on G's absence, GC works.
fn b_client(ctx: &mut Ctx, c: &Container, rot: &Rot, client: &str) {
    let (l, url, g, x) = (rot.l, rot.url.as_str(), rot.g.as_str(), rot.x.as_str());
    let nixv = ctx.nixv(client);
    let o = c.nixc(
        client,
        &[
            "nix",
            "--extra-experimental-features",
            "nix-command",
            "path-info",
            "--store",
            url,
            g,
        ],
    );
    let ok = !o.ok && !c.nixc(client, &["nix-store", "--store", url, "--check-validity", x]).ok;
    let name = format!("{l}: lower B: {nixv}: G");
    let out = o.all();
    if ok {
        ctx.r.pass(
            &format!("{name} (gone from the lower) and X are not valid"),
            &crate::proc::tail(&out, 1),
        );
    } else {
        ctx.r
            .fail(&format!("{name} and X are not valid"), &format!("path-info G: {out}"));
    }
    let o = c.nixc(client, &["nix-store", "--store", url, "--verify"]);
    let out = o.all();
    let ok = o.ok && !out.contains("disappeared") && !out.contains("error");
    ctx.r.check(
        ok,
        &format!("{l}: lower B: {nixv} nix-store --verify finds nothing to repair"),
        "",
        &tail1(&out, 4),
    );
    build_needs_g(ctx, c, rot, client, &nixv);
    let o = c.nixc(client, &["nix-store", "--store", url, "--gc"]);
    let ok = o.ok
        && c.in_c(60, &["find", "/var/lib/snix-overlay/upper", "-type", "c"])
            .out()
            .is_empty();
    let name = format!("{l}: lower B: {nixv} nix-store --gc");
    if ok {
        ctx.r
            .pass(&format!("{name} succeeds, no whiteout in the upper layer"), "");
    } else {
        ctx.r.fail(&name, &tail1(&o.all(), 3));
    }
}

/// A build needing G on lower B: G cannot be built here (no derivation for
/// it) nor substituted; Nix must say so, not trip over a missing file.
fn build_needs_g(ctx: &mut Ctx, c: &Container, rot: &Rot, client: &str, nixv: &str) {
    let (l, url, g) = (rot.l, rot.url.as_str(), rot.g.as_str());
    let args = argv(
        "nix-build --option sandbox false --option substituters",
        &["", "--no-out-link"],
    );
    let args: Vec<&str> = args
        .into_iter()
        .chain(["-E", rot.expr.as_str(), "--store", url])
        .collect();
    let o = c.nixc(client, &args);
    let out = o.all();
    let ok = !o.ok
        && ((out.contains(g) && out.contains("cannot be created")) || out.contains("no substituter that can build it"))
        && !out.contains("No such file")
        && !out.contains("getting attributes");
    let why = out
        .lines()
        .find(|l| l.contains("cannot be created") || l.contains("no substituter"))
        .unwrap_or("");
    let name = format!("{l}: lower B: {nixv}: a build needing G fails on G's");
    if ok {
        ctx.r.pass(
            &format!("{name} absence (nothing can build or substitute it), not on a missing file"),
            why,
        );
    } else {
        ctx.r.fail(&format!("{name} validity"), &tail1(&out, 3));
    }
}

/// 3. Lower A again: it only grew (A contains B).
fn step_a_again(ctx: &mut Ctx, rot: &Rot, lower: &Path) -> bool {
    let (l, url) = (rot.l, rot.url.as_str());
    let Some(c) = rot.boot(ctx, lower, "lower A again") else {
        return false;
    };
    let s_ = summary(&rot_journal(&c), false);
    let st = c.prop("ActiveState", RECONCILE);
    if st == "active" && s_.contains(" 0 lost, 0 changed, 0 broken, 0 invalidated") {
        let ms = format!(
            "reconcile {} ms, import {} ms (activation)",
            rot_ms(&c, RECONCILE),
            rot_ms(&c, "snix-lower-store-import.service")
        );
        ctx.r.pass(
            &format!("{l}: lower A again (grow-only): nothing lost, nothing invalidated"),
            &format!("{s_}; {ms}"),
        );
    } else {
        ctx.r.fail(
            &format!("{l}: lower A again (grow-only): nothing lost"),
            &format!("{st}: {s_}"),
        );
    }
    let (out, err) = nix_build(&c, "sid", url, &rot.expr);
    let ok = out == rot.x
        && c.nixc(
            "trixie",
            &["nix-store", "--store", url, "--check-validity", &rot.g, &rot.x],
        )
        .ok;
    let name = format!("{l}: lower A again:");
    if ok {
        ctx.r.pass(
            &format!("{name} G is valid again and X builds again to the same path"),
            "",
        );
    } else {
        ctx.r.fail(
            &format!("{name} X builds again"),
            &format!("got '{out}'; {}", tail1(&err, 3)),
        );
    }
    true
}

/// Step 4, lower B again, with the reconcile unit the module renders for
/// lower.onBrokenPaths = "invalidate" (rotate.nix): X, rebuilt on A, is
/// invalidated at boot with its derivation and named in the journal.
fn step_b_invalidate(ctx: &mut Ctx, rot: &Rot, lower: &Path) {
    let (l, url, g, x) = (rot.l, rot.url.as_str(), rot.g.as_str(), rot.x.as_str());
    let unit = rot.root.join("etc/systemd/system").join(RECONCILE);
    let rj: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(ctx.t.join("rotate.json")).unwrap_or_default()).unwrap_or_default();
    let text = rj["second-store-bind-invalidate"]["units"][RECONCILE]
        .as_str()
        .unwrap_or("")
        .to_string();
    let _ = fs::remove_file(&unit);
    let _ = fs::write(&unit, &text);
    let script = text
        .lines()
        .filter_map(|l| l.strip_prefix("ExecStart="))
        .collect::<Vec<_>>()
        .join("\n");
    let dst = format!("{}{script}", s(rot.root));
    let _ = fs::remove_file(&dst);
    let _ = fs::copy(format!("{}{script}", s(&ctx.t.join("nixroot"))), &dst);
    run(&mut cmd(&["chmod", "755", &dst]));
    let body = fs::read_to_string(&dst).unwrap_or_default();
    if !body.contains("--on-broken invalidate") {
        ctx.r.fail(&format!("{l}: the invalidating unit"), &body);
        return;
    }
    let Some(c) = rot.boot(ctx, lower, "lower B again") else {
        return;
    };
    let out = rot_journal(&c);
    let st = c.prop("ActiveState", RECONCILE);
    let ok = st == "active"
        && out.contains(&format!("STORE_PATH={x}"))
        && !c
            .nixc("trixie", &["nix-store", "--store", url, "--check-validity", x])
            .ok
        && !c.in_upper(x);
    let name = format!("{l}: lower B again, onBrokenPaths = invalidate: X");
    if ok {
        ctx.r.pass(
            &format!("{name} is invalidated at boot (with its derivation) and named in the journal"),
            &summary(&out, true),
        );
    } else {
        ctx.r.fail(
            &format!("{name} invalidated at boot"),
            &format!("{st}: {}", tail1(&out, 6)),
        );
    }
    for client in ["trixie", "sid"] {
        let nixv = ctx.nixv(client);
        let o = c.nixc(client, &["nix-store", "--store", url, "--verify"]);
        let out = o.all();
        let ok = o.ok
            && !out.contains("disappeared")
            && !out.contains("error")
            && !c.nixc(client, &["nix-store", "--store", url, "--check-validity", g]).ok;
        let name = format!("{l}: lower B again: {nixv}: G not valid,");
        if ok {
            ctx.r
                .pass(&format!("{name} nix-store --verify finds nothing to repair"), "");
        } else {
            ctx.r.fail(&format!("{name} --verify clean"), &tail1(&out, 3));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_and_registrations() {
        let j = "x reconcile: nothing to do\nMESSAGE=\"reconcile: 9 rows checked\"";
        assert_eq!(summary(j, false), "reconcile: 9 rows checked");
        assert_eq!(summary("reconcile: 3 rows\nreconcile: done", true), "reconcile: 3 rows");
        let dir = std::env::temp_dir().join(format!("nl-reg-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let reg = "/nix/store/a\nh\n1\n/d\n0\n/nix/store/g\nh\n1\n/d\n1\n/nix/store/a\n/nix/store/x.drv\nh\n1\n\n0\n";
        fs::write(dir.join("a"), reg).unwrap();
        assert_eq!(
            split_registration(&dir.join("a"), &dir.join("b")).unwrap(),
            "/nix/store/g"
        );
        assert_eq!(entries(&fs::read_to_string(dir.join("b")).unwrap()).len(), 1);
        assert!(!fs::read_to_string(dir.join("a")).unwrap().contains(".drv"));
        fs::remove_dir_all(dir).unwrap();
    }
}
