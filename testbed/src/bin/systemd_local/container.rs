//! Part b: real systemd as PID 1. The Debian trixie root (systemd 257, Nix
//! 2.26.3) booted with systemd-nspawn `--volatile=overlay`, the binary, the
//! units and the demo store bound in read-only, driven with nsenter: import
//! as the service's dynamic user, socket activation by real Nix clients,
//! STATUS=, journald fields, watchdog, stop, SIGKILL then re-activation, idle
//! exit; then part c's verify and security with systemd 257.
//!
//! Invariant: the container is powered off when [`Container`] drops, on every
//! path out of [`run`].

use crate::{have, Pick, Setup};
use anyhow::{Context, Result};
use std::time::{Duration, Instant};
use testbed::cmd::{wait_for, Output};
use testbed::nspawn::{Boot, Container};
use testbed::report::Report;

const SVC: &str = "snix-lower-store.service";
const SOCK: &str = "snix-lower-store.socket";
const STORE: &str = "unix:///run/snix-lower-store/socket";
const POLL: Duration = Duration::from_millis(200);

/// The container and what the checks compare against.
struct B<'a> {
    c: Container,
    s: &'a Setup,
    pick: &'a Pick,
    /// The picked path's references, sorted, newline-joined.
    want: String,
}

/// Sorted lines, newline-joined (like `sort`).
fn sorted(text: &str) -> String {
    let mut v: Vec<&str> = text.lines().collect();
    v.sort_unstable();
    v.join("\n")
}

impl B<'_> {
    fn run(&self, timeout: u64, args: &[&str]) -> Output {
        self.c.run(timeout, args).unwrap_or_else(|e| Output {
            desc: format!("{args:?}"),
            code: None,
            stdout: vec![],
            stderr: format!("{e:#}").into_bytes(),
        })
    }
    /// Combined output, trailing newlines removed (as `$(...)` does).
    fn out(&self, timeout: u64, args: &[&str]) -> (bool, String) {
        let o = self.run(timeout, args);
        (o.success(), o.combined().trim_end_matches('\n').to_string())
    }
    fn sh(&self, timeout: u64, script: &str) -> (bool, String) {
        self.out(timeout, &["sh", "-c", script])
    }
    /// `systemctl show -P NAME UNIT` (stdout only).
    fn prop(&self, name: &str, unit: &str) -> String {
        self.run(15, &["systemctl", "show", "-P", name, unit])
            .stdout()
            .trim_end_matches('\n')
            .to_string()
    }
    fn svc(&self, name: &str) -> String {
        self.prop(name, SVC)
    }
    /// `nix-store --store STORE -q --references TOP` as `user` (root if None).
    fn references(&self, user: Option<&str>) -> (bool, String) {
        let mut args = vec![];
        if let Some(u) = user {
            args.extend(["runuser", "-u", u, "--"]);
        }
        args.extend(["nix-store", "--store", STORE, "-q", "--references", &self.pick.top]);
        self.out(30, &args)
    }
    fn journal_tail(&self) -> String {
        self.out(60, &["journalctl", "-u", SVC, "-n", "5", "--no-pager", "-o", "cat"])
            .1
    }
}

/// Part b (and c in the container), or SKIP/FAIL when a prerequisite is missing.
pub(crate) fn run(s: &Setup, r: &mut Report) -> Result<()> {
    if !have("systemd-nspawn") || !have("nsenter") {
        let why = "systemd-nspawn or nsenter not installed (apt-get install systemd-container util-linux)";
        r.skip_or_fail("b: systemd-nspawn", why);
        return Ok(());
    }
    if !testbed::rootfs::is_ready(&s.rootfs) {
        let why = format!(
            "{} not provisioned (.ci/provision-nix-rootfs trixie)",
            s.rootfs.display()
        );
        r.skip_or_fail("b: root file system", &why);
        return Ok(());
    }
    if !testbed::namespace::is_root() {
        r.skip_or_fail("b: systemd-nspawn", "must run as root");
        return Ok(());
    }
    let pick = s.pick.as_ref().context("no demo paths picked")?;
    let Some(c) = boot(s, r) else { return Ok(()) };
    let b = B {
        c,
        s,
        pick,
        want: sorted(&pick.refs.join("\n")),
    };
    if !configure(&b, r) {
        return Ok(());
    }
    import(&b, r);
    socket(&b, r);
    clients(&b, r);
    sandbox(&b, r);
    status(&b, r);
    write_refused(&b, r);
    let alice = groups(&b, r);
    journal(&b, r, &alice)?;
    watchdog(&b, r);
    stop(&b, r);
    sigkill(&b, r);
    idle(&b, r);
    verify_257(&b, r)?;
    let (_, j) = b.out(60, &["journalctl", "-u", SVC, "-u", SOCK, "--no-pager"]);
    std::fs::write(s.t("journal.txt"), j)?;
    Ok(())
}

/// Boots the container and waits for systemd to be up (running or degraded).
fn boot(s: &Setup, r: &mut Report) -> Option<Container> {
    let name = "b: container boots (systemd as PID 1)";
    let boot = Boot {
        root: &s.rootfs,
        machine: format!("snixls-{}", std::process::id()),
        binds_ro: vec![
            (s.bin.clone(), "/usr/local/bin/snix-lower-store".into()),
            (s.units.clone(), "/usr/local/lib/systemd/system".into()),
            (s.demo.clone(), "/srv/demo".into()),
        ],
        log: s.t("nspawn.log"),
        nspawn_env: vec![],
    };
    let c = match boot.start() {
        Ok(c) => c,
        Err(e) => {
            r.fail("b: container boots", &format!("{e:#}"));
            return None;
        }
    };
    // Until PID 1 has its private socket, systemctl says "offline".
    let state = c.wait_booted(Duration::from_secs(60));
    let version = c
        .run(60, &["systemctl", "--version"])
        .map(|o| o.stdout())
        .unwrap_or_default();
    let version: Vec<&str> = version.lines().next().unwrap_or("").split(' ').take(2).collect();
    match state.as_str() {
        "running" => r.pass(name, &format!("{}, running", version.join(" "))),
        "degraded" => {
            let failed = c.run(60, &["systemctl", "--failed", "--plain", "--no-legend"]);
            let units: Vec<String> = failed
                .map(|o| o.stdout())
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.split_whitespace().next().map(|u| format!("{u} ")))
                .collect();
            r.pass(name, &format!("degraded: {}", units.concat()));
        }
        _ => {
            r.fail(name, &format!("is-system-running: {state}"));
            return None;
        }
    }
    Some(c)
}

/// Configuration as the README documents it: env file + drop-ins.
fn configure(b: &B, r: &mut Report) -> bool {
    let script = r#"set -e
    mkdir -p /etc/snix-lower-store /etc/systemd/system/snix-lower-store.service.d /etc/systemd/system/snix-lower-store.socket.d
    printf "SNIX_LOWER_STORE_LOWER_DIR=/srv/demo/lower/nix/store\nSNIX_LOWER_STORE_LOG_LEVEL=debug\n" >/etc/snix-lower-store/env
    printf "[Unit]\nRequiresMountsFor=/srv/demo\n[Service]\nReadOnlyPaths=/srv/demo\n" >/etc/systemd/system/snix-lower-store.service.d/lower-dir.conf
    printf "[Socket]\nSocketMode=0660\nSocketGroup=nixusers\n" >/etc/systemd/system/snix-lower-store.socket.d/access.conf
    groupadd -r nixusers
    systemctl daemon-reload"#;
    let (ok, out) = b.sh(60, script);
    let _ = std::fs::write(b.s.t("b-config.log"), &out);
    if !ok {
        r.fail("b: configure", &last_lines(&out, 3));
    }
    ok
}

fn last_lines(text: &str, n: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(n)..].join("\n")
}

/// Import as the service's dynamic user, as the README says.
fn import(b: &B, r: &mut Report) {
    let (ok, out) = b.sh(
        60,
        "systemd-run --wait --pipe --quiet -p DynamicUser=yes -p User=snix-lower-store \
         -p StateDirectory=snix-lower-store /usr/local/bin/snix-lower-store import \
         --lower-dir /srv/demo/lower/nix/store --registration - </srv/demo/registration",
    );
    let name = "b: import into the StateDirectory as the dynamic user (systemd-run)";
    r.check_lazy(ok, name, &last_lines(&out, 1), || out.clone());
}

/// The socket listens with the drop-in's mode and group; the service waits.
fn socket(b: &B, r: &mut Report) {
    let (enabled, log) = b.out(60, &["systemctl", "enable", "--now", SOCK]);
    let _ = std::fs::write(b.s.t("b-enable.log"), &log);
    let (sock_state, svc_state) = (b.prop("ActiveState", SOCK), b.svc("ActiveState"));
    let ok = enabled && sock_state == "active" && svc_state == "inactive";
    let name = "b: socket enabled and listening, service not started";
    let detail = b.out(60, &["stat", "-c", "%A %G %n", "/run/snix-lower-store/socket"]).1;
    r.check_lazy(ok, name, &detail, || {
        format!("{log}; socket {sock_state}, service {svc_state}")
    });
    let (_, mode) = b.out(60, &["stat", "-c", "%a:%G", "/run/snix-lower-store/socket"]);
    if mode == "660:nixusers" {
        r.pass("b: socket drop-in applied (SocketMode=0660, SocketGroup=nixusers)", "");
    } else {
        r.fail("b: socket drop-in applied", &mode);
    }
}

/// A real Nix client activates the service; `nix path-info --json` too.
fn clients(b: &B, r: &mut Report) {
    let t0 = Instant::now();
    let (_, out) = b.references(None);
    let ms = t0.elapsed().as_millis();
    let state = b.svc("ActiveState");
    let name = "b: nix-store -q --references activates the service and is answered";
    let detail = format!("{ms}ms, {} references", b.pick.refs.len());
    r.check_lazy(sorted(&out) == b.want && state == "active", name, &detail, || {
        format!("got [{out}] want [{}]; service {state}; {}", b.want, b.journal_tail())
    });
    let args = [
        "nix",
        "--extra-experimental-features",
        "nix-command",
        "path-info",
        "--store",
        STORE,
        "--json",
        &b.pick.top,
    ];
    let (_, out) = b.out(30, &args);
    let name = "b: nix path-info --json over the activated socket";
    r.check_lazy(out.contains("narHash"), name, "", || out.clone());
}

/// The service's uid and the mounts it sees, as "UID MOUNT=OPT ..." (its
/// /, /srv/demo and state directory, each with its first mount option).
fn uid_and_mounts(b: &B, pid: &str) -> String {
    let (_, status) = b.out(60, &["cat", &format!("/proc/{pid}/status")]);
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("")
        .to_string();
    let (_, info) = b.out(60, &["cat", &format!("/proc/{pid}/mountinfo")]);
    let mut mounts: Vec<String> = info
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (point, opts) = (*f.get(4)?, *f.get(5)?);
            let wanted = point == "/" || point == "/srv/demo" || point.ends_with("snix-lower-store");
            wanted.then(|| format!("{point}={}", opts.split(',').next().unwrap_or("")))
        })
        .collect();
    mounts.sort();
    mounts.dedup();
    format!("{uid} {} ", mounts.join(" "))
}

/// The unit's settings reach the daemon: dynamic user, / read-only
/// (ProtectSystem=strict), the lower dir read-only, the state directory writable.
fn sandbox(b: &B, r: &mut Report) {
    let out = uid_and_mounts(b, &b.svc("MainPID"));
    let uid = out.split(' ').next().unwrap_or("");
    let dynamic =
        uid.len() == 5 && uid.starts_with('6') && !uid.starts_with("60") && uid.bytes().all(|c| c.is_ascii_digit());
    let has = |m: &str| format!(" {out} ").contains(&format!(" {m} "));
    let ok =
        dynamic && has("/=ro") && has("/srv/demo=ro") && has("/var/lib/private/snix-lower-store=rw") && !has("/=rw");
    let name = "b: service runs as its dynamic user, / and the lower dir read-only, state dir writable";
    let detail = format!("uid and mounts: {out}");
    r.check_lazy(ok, name, &detail, || detail.clone());
}

/// STATUS= as systemctl shows it: the key directory part holds every path
/// and no failed build (requests that came while it was being built are
/// answered from SQLite).
fn status(b: &B, r: &mut Report) {
    let n = &b.pick.npaths;
    let served = regex::Regex::new("[1-9][0-9]* requests served").expect("a valid pattern");
    wait_for(Duration::from_secs(8), POLL, || served.is_match(&b.svc("StatusText")));
    let status = b.svc("StatusText");
    let pattern = format!(
        "^{n} paths indexed, [0-9]+ open connections, [1-9][0-9]* requests served, 0 panics; key directory: {n} \
         paths, [1-9][0-9]* built, 0 failed; [0-9]+ reader snapshots answered from it, [0-9]+ from SQLite$"
    );
    let ok = regex::Regex::new(&pattern).is_ok_and(|re| re.is_match(&status));
    r.check_lazy(ok, "b: systemctl show -p StatusText", &status, || {
        format!(
            "got '{status}', want '{n} paths indexed, <C> open connections, <R> requests served, 0 panics; key \
             directory: {n} paths, <B> built, 0 failed; <S> reader snapshots answered from it, <Q> from SQLite' \
             with R, B >= 1"
        )
    });
}

/// A refused write, logged at info.
fn write_refused(b: &B, r: &mut Report) {
    let (ok, out) = b.sh(30, &format!("echo hi >/tmp/f; nix-store --store {STORE} --add /tmp/f"));
    let line = out.lines().find(|l| l.to_lowercase().contains("read-only"));
    let detail = line
        .map(|l| l.chars().take(120).collect::<String>())
        .unwrap_or_default();
    r.check_lazy(
        !ok && line.is_some(),
        "b: write op refused over the socket",
        &detail,
        || out.clone(),
    );
}

/// SocketGroup=nixusers: a member connects (and is logged with its UID), a
/// non-member is refused by the socket's permissions. Returns alice's uid.
fn groups(b: &B, r: &mut Report) -> String {
    b.sh(60, "useradd -m -G nixusers alice && useradd -m bob");
    let alice = b.out(60, &["id", "-u", "alice"]).1;
    let (_, out) = b.references(Some("alice"));
    let name = format!("b: member of SocketGroup (uid {alice}) is answered");
    r.check_lazy(sorted(&out) == b.want, &name, "", || out.clone());
    let (ok, out) = b.references(Some("bob"));
    let denied = out.to_lowercase().contains("permission denied");
    let first: String = out.lines().next().unwrap_or("").chars().take(100).collect();
    r.check_lazy(
        !ok && denied,
        "b: non-member refused by SocketMode=0660",
        &first,
        || out.clone(),
    );
    alice
}

/// Collapses whitespace runs (`tr '\n' ' ' | tr -s ' '`).
fn one_line(text: &str) -> String {
    let mut s = text.replace('\n', " ");
    while s.contains("  ") {
        s = s.replace("  ", " ");
    }
    s
}

/// Structured journal fields, checked by `sdtest.py journal-check`.
fn journal(b: &B, r: &mut Report, alice: &str) -> Result<()> {
    std::thread::sleep(Duration::from_millis(500));
    b.run(60, &["journalctl", "--sync"]);
    let (_, json) = b.out(60, &["journalctl", "-u", SVC, "-o", "json", "--no-pager"]);
    let file = b.s.t("journal.json");
    std::fs::write(&file, format!("{json}\n"))?;
    let check = std::process::Command::new("python3")
        .arg(&b.s.helper)
        .arg("journal-check")
        .arg(&b.pick.top)
        .stdin(std::fs::File::open(&file)?)
        .output()
        .context("cannot start sdtest.py journal-check")?;
    let text = String::from_utf8_lossy(&check.stdout).into_owned() + &String::from_utf8_lossy(&check.stderr);
    let out = one_line(text.trim_end_matches('\n'));
    let uid_field = format!("\"CLIENT_UID\":\"{alice}\"");
    let ok = check.status.success() && json.contains(&uid_field);
    let name = "b: journald structured fields OP STORE_PATH CLIENT_PID CLIENT_UID DURATION_US RESULT";
    let detail: String = out.chars().take(400).collect();
    r.check_lazy(ok, name, &detail, || {
        let n = json.lines().filter(|l| l.contains(&uid_field)).count();
        format!("{out}; CLIENT_UID={alice} (alice) logged: {n}")
    });
    Ok(())
}

/// Watchdog pings (WatchdogSec=30s in the unit).
fn watchdog(b: &B, r: &mut Report) {
    let field = "WatchdogTimestampMonotonic";
    wait_for(Duration::from_secs(8), POLL, || b.svc(field) != "0");
    let wd = b.svc(field);
    let ok = !wd.is_empty() && wd != "0";
    let detail = format!("WatchdogUSec={}", b.svc("WatchdogUSec"));
    r.check_lazy(ok, "b: WATCHDOG=1 pings received", &detail, || format!("{field}={wd}"));
}

/// systemctl stop: SIGTERM -> STOPPING=1, exit 0.
fn stop(b: &B, r: &mut Report) {
    let t0 = Instant::now();
    let (_, log) = b.out(40, &["systemctl", "stop", SVC]);
    let _ = std::fs::write(b.s.t("b-stop.log"), &log);
    let ms = t0.elapsed().as_millis();
    let (st, res) = (b.svc("ActiveState"), b.svc("Result"));
    let (code, estatus) = (b.svc("ExecMainCode"), b.svc("ExecMainStatus"));
    let ok = st == "inactive" && res == "success" && code == "1" && estatus == "0";
    let detail = format!("{ms}ms, ActiveState=inactive Result=success, exited with status 0");
    r.check_lazy(ok, "b: systemctl stop is clean", &detail, || {
        format!("ActiveState={st} Result={res} ExecMainCode={code} (1=exited) ExecMainStatus={estatus}; {log}")
    });
}

/// SIGKILL, then the next query re-activates the service.
fn sigkill(b: &B, r: &mut Report) {
    b.references(None);
    let pid1 = b.svc("MainPID");
    b.run(60, &["systemctl", "kill", "-s", "SIGKILL", SVC]);
    wait_for(Duration::from_secs(10), POLL, || b.svc("ActiveState") != "active");
    let after_kill = format!("{}/{}", b.svc("ActiveState"), b.svc("Result"));
    let (_, out) = b.references(None);
    let pid2 = b.svc("MainPID");
    let sock = b.prop("ActiveState", SOCK);
    let ok = sorted(&out) == b.want && pid1 != "0" && pid2 != "0" && pid1 != pid2 && sock == "active";
    let name = "b: SIGKILLed daemon re-activated by the next query";
    let detail = format!("after kill: {after_kill}; MainPID {pid1} -> {pid2}");
    r.check_lazy(ok, name, &detail, || format!("{detail}; socket {sock}; query: {out}"));
}

/// Idle exit under systemd, then re-activation.
fn idle(b: &B, r: &mut Report) {
    b.sh(
        60,
        "echo SNIX_LOWER_STORE_IDLE_EXIT_AFTER=2s >>/etc/snix-lower-store/env; systemctl stop snix-lower-store.service",
    );
    b.references(None);
    let t0 = Instant::now();
    wait_for(Duration::from_secs(10), POLL, || b.svc("ActiveState") == "inactive");
    let (st, res, estatus) = (b.svc("ActiveState"), b.svc("Result"), b.svc("ExecMainStatus"));
    let idle_ms = t0.elapsed().as_millis();
    let (_, out) = b.references(None);
    let ok = st == "inactive" && res == "success" && estatus == "0" && sorted(&out) == b.want;
    let name = "b: idle exit under systemd (exit 0, Result=success), next query re-activates";
    r.check_lazy(ok, name, &format!("inactive after {idle_ms}ms"), || {
        format!("ActiveState={st} Result={res} ExecMainStatus={estatus} after {idle_ms}ms; query: {out}")
    });
}

/// c (container part): systemd 257's verify and security on the installed units.
fn verify_257(b: &B, r: &mut Report) -> Result<()> {
    let units = [
        "systemd-analyze",
        "verify",
        "/usr/local/lib/systemd/system/snix-lower-store.socket",
        "/usr/local/lib/systemd/system/snix-lower-store.service",
    ];
    let (ok, out) = b.out(60, &units);
    let name = "c: systemd-analyze verify (systemd 257, in the container, with the drop-ins)";
    r.check_lazy(ok && out.is_empty(), name, "", || out.clone());
    let (_, sec) = b.out(60, &["systemd-analyze", "security", "--no-pager", SVC]);
    let file = b.s.t("security-257.txt");
    std::fs::write(&file, format!("{sec}\n"))?;
    let name = "c: systemd-analyze security (systemd 257)";
    crate::verify::exposure_check(r, name, &file, crate::verify::MAX_EXPOSURE_257);
    Ok(())
}
