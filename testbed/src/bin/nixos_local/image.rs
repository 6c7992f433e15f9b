//! Part boot, issue 14: lower.index = "image". The images are made by the
//! flake's lib.mkLowerImage, built by real Nix 2.26 with the stand-ins of
//! image-build.nix (this machine's mkfs.erofs): the directory form, bound as
//! the lower, and the erofs form, loop-mounted by the host and bound the
//! same way; the image-mode units boot over each with no import, Nix 2.26
//! and 2.34 query (proven content addresses), build and collect garbage.
//!
//! Invariants: the image is byte-identical after the boot and the queries
//! (tree_digest before and after); the erofs form holds the same store
//! objects as the directory form, all root's.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::Hasher;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Instant;

use serde_json::Value;

use crate::boot::{build_expr, built_in_upper, failed_units, nix_build, sorted_lines};
use crate::nspawn::{BootSpec, Container};
use crate::proc::{cmd, fresh_dir, oneline, run, s, sanitize, tail1, which};
use crate::render::render_config;
use crate::rootfs::in_rootfs_nix;
use crate::Ctx;

/// A fingerprint of a directory tree: names, types, modes, mtimes, link
/// targets and file contents (not directory sizes, which differ between file
/// systems), leaving out the top-level names in `except`.
pub(crate) fn tree_digest(dir: &Path, except: &[&str]) -> u64 {
    let mut lines = vec![];
    if let Ok(m) = fs::symlink_metadata(dir) {
        lines.push((
            format!(
                ". d {:o} {}.{}",
                m.permissions().mode() & 0o7777,
                m.mtime(),
                m.mtime_nsec()
            ),
            0,
        ));
    }
    walk(dir, dir, except, &mut lines);
    lines.sort();
    let mut h = DefaultHasher::new();
    for (l, content) in lines {
        h.write(l.as_bytes());
        h.write_u64(content);
    }
    h.finish()
}

fn walk(top: &Path, dir: &Path, except: &[&str], out: &mut Vec<(String, u64)>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        let rel = p
            .strip_prefix(top)
            .map(|r| r.to_string_lossy().into_owned())
            .unwrap_or_default();
        if except.iter().any(|x| rel == *x || rel.starts_with(&format!("{x}/"))) {
            continue;
        }
        let Ok(m) = fs::symlink_metadata(&p) else { continue };
        let link = fs::read_link(&p)
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default();
        let kind = if m.is_dir() {
            'd'
        } else if m.file_type().is_symlink() {
            'l'
        } else {
            'f'
        };
        let line = format!(
            "{rel} {kind} {:o} {}.{} {link}",
            m.permissions().mode() & 0o7777,
            m.mtime(),
            m.mtime_nsec()
        );
        let content = if m.is_file() { file_digest(&p) } else { 0 };
        out.push((line, content));
        if m.is_dir() {
            walk(top, &p, except, out);
        }
    }
}

pub(crate) fn file_digest(p: &Path) -> u64 {
    let mut h = DefaultHasher::new();
    h.write(&fs::read(p).unwrap_or_default());
    h.finish()
}

/// Whether anything under `dir` is not owned by root:root.
fn all_roots(dir: &Path) -> bool {
    let mut lines = vec![];
    walk(dir, dir, &[], &mut lines);
    let top_ok = fs::symlink_metadata(dir)
        .map(|m| m.uid() == 0 && m.gid() == 0)
        .unwrap_or(false);
    top_ok
        && lines.iter().all(|(l, _)| {
            let rel = l.split(' ').next().unwrap_or("");
            fs::symlink_metadata(dir.join(rel))
                .map(|m| m.uid() == 0 && m.gid() == 0)
                .unwrap_or(false)
        })
}

/// What the image part needs to know of the image's closure.
struct Closure {
    root: String,
    text: String,
    source: String,
    paths: Vec<String>,
}

pub(crate) fn boot_image(ctx: &mut Ctx, bin: &Path) {
    let label = "boot trixie second-store-bind-image";
    let _ = fs::create_dir_all(ctx.t.join("image-bin/bin"));
    let _ = fs::copy(bin, ctx.t.join("image-bin/bin/snix-lower-store"));
    let mut nixargs: Vec<String> = [
        "--option",
        "sandbox",
        "false",
        "--option",
        "build-users-group",
        "",
        "--option",
        "substituters",
        "",
    ]
    .map(String::from)
    .to_vec();
    nixargs.extend(
        [
            "/mnt/src/tests/nixos-local/image-build.nix",
            "--arg",
            "repo",
            "/mnt/src",
            "--arg",
            "nixpkgs",
        ]
        .map(String::from),
    );
    nixargs.extend(["/mnt/nixpkgs", "--arg", "bin", "/mnt/work/image-bin"].map(String::from));
    let mkfs = which("mkfs.erofs");
    let erofs = mkfs.is_some()
        && fs::read_to_string("/proc/filesystems")
            .unwrap_or_default()
            .split_whitespace()
            .any(|w| w == "erofs");
    if erofs {
        let _ = fs::create_dir_all(ctx.t.join("erofs-bin/bin"));
        let _ = fs::copy(mkfs.unwrap_or_default(), ctx.t.join("erofs-bin/bin/mkfs.erofs"));
        nixargs.extend(["--arg", "erofsBin", "/mnt/work/erofs-bin"].map(String::from));
    } else {
        let why = "no mkfs.erofs (apt-get install erofs-utils) or no erofs in /proc/filesystems";
        ctx.r.skip_or_fail(&format!("14 {label}: erofs form"), why);
    }
    let Some((dir, closure)) = directory_form(ctx, label, &nixargs) else {
        return;
    };
    boot_image_over(ctx, &format!("{label} (directory form)"), &dir, &closure);
    if erofs {
        erofs_form(ctx, label, &nixargs, &dir, &closure);
    }
}

/// Builds the directory form and checks it; its path on the host and closure.
fn directory_form(ctx: &mut Ctx, label: &str, nixargs: &[String]) -> Option<(std::path::PathBuf, Closure)> {
    let mut a: Vec<String> = vec!["nix-build".into(), "--no-out-link".into(), "-A".into(), "image".into()];
    a.extend(nixargs.iter().cloned());
    let o = run(&mut in_rootfs_nix(ctx, &a));
    let _ = fs::write(ctx.t.join("image-build.err"), &o.stderr);
    if !o.ok {
        ctx.r.fail(
            &format!("14 {label}: lib.mkLowerImage built by real Nix"),
            &tail1(&o.stderr, 6),
        );
        return None;
    }
    let img = o.out();
    let mut a: Vec<String> = [
        "nix-instantiate",
        "--read-write-mode",
        "--eval",
        "--strict",
        "--json",
        "-A",
        "paths",
    ]
    .map(String::from)
    .to_vec();
    a.extend(nixargs.iter().cloned());
    let p = run(&mut in_rootfs_nix(ctx, &a));
    let v: Value = match serde_json::from_str(&p.stdout) {
        Ok(v) if p.ok => v,
        _ => {
            ctx.r.fail(&format!("14 {label}: the image's closure"), &p.all());
            return None;
        }
    };
    let store = |x: &str| ctx.t.join("image-nix/store").join(x.trim_start_matches("/nix/store/"));
    let get = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let cinfo = store(&get("closureInfo")).join("store-paths");
    let closure = Closure {
        root: get("root"),
        text: get("text"),
        source: get("source"),
        paths: sorted_lines(&fs::read_to_string(cinfo).unwrap_or_default()),
    };
    let dir = store(&img);
    let mut listed: Vec<String> = glob_all(&dir.join("nix/store"))
        .iter()
        .map(|n| format!("/nix/store/{n}"))
        .collect();
    listed.sort();
    let meta = dir.join(".snix-lower-store");
    let nonempty = |n: &str| fs::metadata(meta.join(n)).map(|m| m.len() > 0).unwrap_or(false);
    let ok = nonempty("index")
        && nonempty("id")
        && nonempty("registration")
        && listed == closure.paths
        && closure.paths.len() == 3
        && glob_all(&dir) == [".snix-lower-store", "nix"];
    let nixv = ctx.nixv("trixie");
    let name = format!("14 {label}: lib.mkLowerImage (format = \"directory\") built by real Nix");
    if ok {
        let d = format!("{img}: {} store paths, nothing else, in nix/store/, .snix-lower-store/{{index,id,registration}} beside it; closureInfo stood in for", closure.paths.len());
        ctx.r.pass(&format!("{name} {}", nixv.trim_start_matches("Nix ")), &d);
        Some((dir, closure))
    } else {
        let ls = run(&mut cmd(&["ls", "-A", s(&dir), s(&dir.join("nix/store")), s(&meta)])).all();
        ctx.r.fail(
            &name,
            &format!("{}; closure: {}", oneline(&ls), closure.paths.join(" ")),
        );
        None
    }
}

/// Every name in `d`, dot files too, sorted (`ls -A`).
fn glob_all(d: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(d)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn erofs_form(ctx: &mut Ctx, label: &str, nixargs: &[String], dir: &Path, closure: &Closure) {
    let mut a: Vec<String> = vec![
        "nix-build".into(),
        "--no-out-link".into(),
        "-A".into(),
        "imageErofs".into(),
    ];
    a.extend(nixargs.iter().cloned());
    let o = run(&mut in_rootfs_nix(ctx, &a));
    if !o.ok {
        ctx.r.fail(
            &format!("14 {label}: lib.mkLowerImage (format = \"erofs\") built by real Nix"),
            &tail1(&o.stderr, 6),
        );
        return;
    }
    let file = ctx
        .t
        .join("image-nix/store")
        .join(o.out().trim_start_matches("/nix/store/"));
    let mnt = ctx.t.join("erofs-mnt");
    let _ = fs::create_dir_all(&mnt);
    let m = run(&mut cmd(&["mount", "-t", "erofs", "-o", "loop,ro", s(&file), s(&mnt)]));
    if !m.ok {
        ctx.r.fail(&format!("14 {label}: mount the erofs image"), &m.all());
        return;
    }
    let meta = mnt.join(".snix-lower-store");
    let nonempty = |n: &str| fs::metadata(meta.join(n)).map(|m| m.len() > 0).unwrap_or(false);
    let ok = tree_digest(&mnt, &[".snix-lower-store"]) == tree_digest(dir, &[".snix-lower-store"])
        && nonempty("index")
        && nonempty("id")
        && all_roots(&mnt);
    let version = run(&mut cmd(&["dpkg-query", "-W", "-f", "${Version}", "erofs-utils"]));
    let version = if version.ok { version.out() } else { "unknown".into() };
    let size = fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    if ok {
        let name = format!("14 {label}: lib.mkLowerImage (format = \"erofs\") built by real Nix with this machine's mkfs.erofs ({version})");
        ctx.r.pass(&name, &format!("{size} bytes, all root's, the same store objects (names, modes, mtimes, contents) as the directory form"));
    } else {
        let ls = run(&mut cmd(&["ls", "-lA", s(&mnt), s(&meta)])).all();
        ctx.r.fail(
            &format!("14 {label}: lib.mkLowerImage (format = \"erofs\")"),
            &oneline(&ls),
        );
    }
    let sum = file_digest(&file);
    boot_image_over(ctx, &format!("{label} (erofs form)"), &mnt, closure);
    run(&mut cmd(&["umount", s(&mnt)]));
    let name = format!("14 {label} (erofs form): the image file is byte-identical afterwards");
    ctx.r.check(
        file_digest(&file) == sum,
        &name,
        "",
        &format!("{} changed", file.display()),
    );
}

/// The path-info --json of the image's closure against the closure and
/// the proven content addresses of its text and source paths.
pub(crate) fn check_infos(json: &str, closure: &[String], text: &str, source: &str) -> Result<(), String> {
    let mut v: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    if v.get("info").is_some_and(Value::is_object) {
        v = v["info"].clone();
    }
    let mut infos = std::collections::BTreeMap::new();
    match &v {
        Value::Array(a) => a.iter().for_each(|i| {
            infos.insert(i["path"].as_str().unwrap_or("").to_string(), i.clone());
        }),
        Value::Object(m) => m.iter().for_each(|(k, i)| {
            infos.insert(k.clone(), i.clone());
        }),
        _ => return Err(format!("neither a list nor an object: {v}")),
    }
    let infos: std::collections::BTreeMap<String, Value> = infos
        .into_iter()
        .map(|(k, i)| {
            (
                if k.starts_with('/') {
                    k
                } else {
                    format!("/nix/store/{k}")
                },
                i,
            )
        })
        .collect();
    let mut bad = vec![];
    let got: Vec<&String> = infos.keys().collect();
    let mut want: Vec<&String> = closure.iter().collect();
    want.sort();
    want.dedup();
    if got != want {
        bad.push(format!("paths {got:?}"));
    }
    for (p, want) in [(text, "text"), (source, "fixed:r")] {
        let ca = infos.get(p).map(|i| i["ca"].clone()).unwrap_or(Value::Null);
        if ca_method(&ca) != want {
            bad.push(format!("ca of {p}: {ca}, want {want}"));
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad.join("; "))
    }
}

/// The method of a content address, in Nix's old (string) and new (object)
/// JSON forms: "text", "fixed:r" or what it was.
fn ca_method(ca: &Value) -> String {
    match ca {
        Value::Object(m) if m.get("hash").is_some_and(|h| h.as_str() != Some("") && !h.is_null()) => {
            match m.get("method").and_then(Value::as_str) {
                Some("text") => "text".into(),
                Some("nar") => "fixed:r".into(),
                _ => ca.to_string(),
            }
        }
        Value::String(s) if s.starts_with("text:sha256:") => "text".into(),
        Value::String(s) if s.starts_with("fixed:r:sha256:") => "fixed:r".into(),
        Value::String(s) => s.clone(),
        _ => ca.to_string(),
    }
}

const OVERLAY_UNITS: [&str; 4] = [
    "var-lib-snix\\x2doverlay-lower.mount",
    "var-lib-snix\\x2doverlay-nix-store.mount",
    "snix-lower-store-check.service",
    "snix-lower-store.socket",
];

/// Boots the image-mode units over lower directory `dir` and checks them.
fn boot_image_over(ctx: &mut Ctx, label: &str, dir: &Path, cl: &Closure) {
    let root = ctx.t.join("boot").join(sanitize(label)).join("root");
    let overlay_root = ctx.t.join("overlay-image");
    let before = tree_digest(dir, &[]);
    fresh_dir(&overlay_root);
    let _ = fs::create_dir_all(&root);
    let o = render_config(ctx, "case second-store-bind-image", &root, "boot");
    if !o.ok {
        ctx.r.fail(&format!("{label}: lay out the units"), &tail1(&o.all(), 3));
        return;
    }
    let t0 = Instant::now();
    let spec = BootSpec {
        rootfs: "trixie",
        root: &root,
        lower: dir,
        overlay_root: &overlay_root,
        extra_binds: vec![],
    };
    let mut c = Container::boot(ctx, spec);
    image_booted(ctx, &c, label, t0);
    if c.leader.is_none() {
        return;
    }
    image_units(ctx, &c, label);
    let url = c.store_url();
    for client in ["trixie", "sid"] {
        image_client(ctx, &c, label, &url, client, cl);
    }
    for client in ["trixie", "sid"] {
        image_gc(ctx, &c, label, &url, client, cl);
    }
    let j = c
        .in_c(
            60,
            &[
                "journalctl",
                "-b",
                "-u",
                "snix-lower-store.service",
                "--no-pager",
                "-o",
                "cat",
            ],
        )
        .stdout;
    let name = format!("14 {label}: the daemon serves the image's own index");
    if j.contains("serving the image's own index") {
        ctx.r.pass(&format!("{name}, read-only"), "");
    } else {
        ctx.r.fail(&name, &tail1(&j, 5));
    }
    c.stop();
    let name = format!("14 {label}: the image is byte-identical after the boot and the queries");
    ctx.r.check(
        tree_digest(dir, &[]) == before,
        &name,
        "",
        &format!("{} changed", dir.display()),
    );
}

/// The boot check of the image units (degraded only by units not ours).
fn image_booted(ctx: &mut Ctx, c: &Container, label: &str, t0: Instant) {
    let failed = failed_units(c);
    let st = c.state.clone();
    let name = format!("{label}: systemd as PID 1 boots the rendered units");
    if st == "running" || (st == "degraded" && !failed.contains("snix")) {
        let f = if failed.is_empty() {
            String::new()
        } else {
            format!(" ({failed})")
        };
        ctx.r.pass(&name, &format!("{}s, {st}{f}", t0.elapsed().as_secs()));
    } else {
        let j = crate::boot::failed_journal(c, &failed);
        ctx.r
            .fail(&name, &format!("is-system-running: {st}; failed: {failed}; {j}"));
    }
}

fn image_units(ctx: &mut Ctx, c: &Container, label: &str) {
    for unit in OVERLAY_UNITS {
        let st = c.prop("ActiveState", unit);
        let detail = format!("{st}; {}", c.journal(unit, 4));
        ctx.r.check(
            st == "active",
            &format!("14 {label}: {unit} active at boot"),
            "",
            &detail,
        );
    }
    let dirs = c
        .in_c(
            60,
            &[
                "sh",
                "-c",
                "ls -d /var/lib/snix-lower-store /var/lib/private/snix-lower-store 2>/dev/null",
            ],
        )
        .out();
    let out = format!("{} {dirs}", c.prop("LoadState", "snix-lower-store-import.service"));
    let name = format!("14 {label}: no import unit, no state directory");
    ctx.r.check(
        out == "not-found ",
        &name,
        "",
        &format!("import unit LoadState and state dirs: {out}"),
    );
    let out = c
        .in_c(
            60,
            &["findmnt", "-n", "-o", "OPTIONS", "/var/lib/snix-overlay/nix/store"],
        )
        .out();
    let ok = format!(",{out},").contains(",lowerdir=/var/lib/snix-overlay/lower/nix/store,");
    ctx.r.check(
        ok,
        &format!("14 {label}: the overlay's lowerdir is the image's nix/store"),
        "",
        &format!("options: {out}"),
    );
}

fn image_client(ctx: &mut Ctx, c: &Container, label: &str, url: &str, client: &str, cl: &Closure) {
    let nixv = ctx.nixv(client);
    let args = [
        "nix",
        "--extra-experimental-features",
        "nix-command",
        "path-info",
        "--store",
        url,
        "--json",
        "--recursive",
        &cl.root,
    ];
    let o = c.nixc(client, &args);
    match check_infos(&o.stdout, &cl.paths, &cl.text, &cl.source) {
        Ok(()) => ctx.r.pass(&format!("14 {label}: {nixv} path-info --json of the image's closure through the merged store, with the proven ca of a text and a source path"), ""),
        Err(e) => {
            let out: String = o.stdout.chars().take(600).collect();
            let d = format!("{e}; output: {out}; stderr: {}", tail1(&o.stderr, 3));
            ctx.r.fail(&format!("14 {label}: {nixv} path-info --json of the image's closure, with the proven ca"), &d);
        }
    }
    let got = sorted_lines(&c.nixc(client, &["nix-store", "--store", url, "-qR", &cl.root]).all());
    let name = format!("14 {label}: {nixv} nix-store -qR through the merged store");
    ctx.r.check(
        got == cl.paths,
        &name,
        &format!("{} paths", got.len()),
        &format!("got {}", got.join(" ")),
    );
    let (built, err) = nix_build(c, client, url, &build_expr(&format!("nl-image-{client}"), &cl.root));
    let name = format!("14 {label}: {nixv} builds from an image path through the merged store");
    if built_in_upper(c, &built, &cl.root) {
        ctx.r.pass(&format!("{name}; the output is in the upper layer"), &built);
    } else {
        ctx.r.fail(&name, &tail1(&err, 4));
    }
}

/// Nix's garbage collector deletes whatever in the store directory is no
/// store path (why mkLowerImage keeps .snix-lower-store beside nix/store).
fn image_gc(ctx: &mut Ctx, c: &Container, label: &str, url: &str, client: &str, cl: &Closure) {
    let nixv = ctx.nixv(client);
    let o = c.nixc(client, &["nix-store", "--store", url, "--gc"]);
    let rc = if o.ok { 0 } else { 1 };
    let all = o.all();
    let kept: Vec<&str> = all.lines().filter(|l| !l.contains("Internet access")).collect();
    let out = tail1(&kept.join("\n"), 3);
    let upper = "/var/lib/snix-overlay/upper";
    let ok = c.ok(&["test", "-s", "/var/lib/snix-overlay/lower/.snix-lower-store/index"])
        && c.in_c(60, &["find", upper, "-maxdepth", "2", "-name", ".snix-lower-store*"])
            .out()
            .is_empty()
        && c.in_c(60, &["find", upper, "-type", "c"]).out().is_empty()
        && sorted_lines(&c.nixc(client, &["nix-store", "--store", url, "-qR", &cl.root]).stdout) == cl.paths;
    let name = format!("14 {label}: {nixv} nix-store --gc over the merged store leaves the image alone");
    if ok {
        ctx.r.pass(
            &format!("{name} (no whiteout in the upper layer), the closure still valid"),
            &format!("exit {rc}: {out}"),
        );
    } else {
        let up = oneline(&c.in_c(60, &["find", upper, "-maxdepth", "2"]).out());
        ctx.r.fail(&name, &format!("exit {rc}: {out}; upper: {up}"));
    }
    let name = format!("14 {label}: {nixv} nix-store --gc over the merged store succeeds");
    let why = "(Nix's GC deletes every name in the store directory that is no store path: is there one in the image's nix/store?)";
    ctx.r.check(o.ok, &name, &out, &format!("exit {rc}: {out} {why}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_methods_in_both_forms() {
        assert_eq!(ca_method(&serde_json::json!("text:sha256:abc")), "text");
        assert_eq!(
            ca_method(&serde_json::json!({"method": "nar", "hash": "sha256-x"})),
            "fixed:r"
        );
        assert_eq!(ca_method(&Value::Null), "null");
        let paths = vec!["/nix/store/a".to_string(), "/nix/store/b".to_string()];
        let j = r#"{"/nix/store/a": {"ca": "text:sha256:1"}, "b": {"ca": "fixed:r:sha256:2"}}"#;
        assert!(check_infos(j, &paths, "/nix/store/a", "/nix/store/b").is_ok());
        assert!(check_infos(j, &paths, "/nix/store/b", "/nix/store/a").is_err());
    }
}
