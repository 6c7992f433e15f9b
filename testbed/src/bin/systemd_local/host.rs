//! Part a: the daemon on the host, no systemd needed. Under
//! systemd-socket-activate with a NOTIFY_SOCKET listener (READY=1, STATUS=,
//! first request answered, idle exit 0, SIGTERM -> STOPPING=1), then under
//! `sdtest.py supervise`, which keeps the listening socket as a .socket unit
//! does (idle exits and re-activations, no failed request; no exit while
//! clients keep coming).
//!
//! Invariant: every process started here is a child held by a [`Bg`] guard
//! or a thread that waits for it, so none outlives the part.

use crate::{file_tail, Pick, Setup};
use anyhow::{Context, Result};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testbed::cmd::{capture, wait_for};
use testbed::report::Report;

const POLL: Duration = Duration::from_millis(200);

/// Background children, sent SIGTERM and waited for when dropped.
#[derive(Default)]
pub(crate) struct Bg(Vec<Child>);

impl Bg {
    fn spawn(&mut self, cmd: &mut Command, what: &str) -> Result<u32> {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {what}"))?;
        let pid = child.id();
        self.0.push(child);
        Ok(pid)
    }

    /// SIGTERM to one child, then waits for it.
    fn stop(&mut self, pid: u32) {
        if let Some(i) = self.0.iter().position(|c| c.id() == pid) {
            let mut c = self.0.remove(i);
            term(&c);
            let _ = c.wait();
        }
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        self.0.iter().for_each(term);
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

fn term(c: &Child) {
    if let Some(pid) = rustix::process::Pid::from_raw(c.id() as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
}

/// The exit code of a finished process as the shell reports it.
fn code(st: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
}

fn log_file(p: &Path) -> Result<File> {
    File::create(p).with_context(|| format!("cannot create {}", p.display()))
}

/// The daemon's environment for every part-a run.
fn daemon_env(s: &Setup, cmd: &mut Command, idle: Option<&str>) {
    cmd.env("SNIX_LOWER_STORE_LOWER_DIR", s.lower())
        .env("SNIX_LOWER_STORE_STATE_DIR", s.demo.join("state"))
        .env("SNIX_LOWER_STORE_LOG_TARGET", "stderr");
    if let Some(d) = idle {
        cmd.env("SNIX_LOWER_STORE_IDLE_EXIT_AFTER", d);
    }
}

/// `sdtest.py query SOCKET TOP` (IsValidPath, 25 s bound): its output.
fn query(s: &Setup, sock: &Path, top: &str) -> String {
    let out = capture(
        Command::new("timeout")
            .arg("25")
            .arg("python3")
            .arg(&s.helper)
            .arg("query")
            .arg(sock)
            .arg(top),
    );
    match out {
        Ok(o) => o.combined().trim_end().to_string(),
        Err(e) => format!("{e:#}"),
    }
}

/// The sd_notify messages received so far (one per line: "TIME MESSAGE").
struct Notify(PathBuf);

impl Notify {
    fn text(&self) -> String {
        std::fs::read_to_string(&self.0).unwrap_or_default()
    }
    fn seen(&self, msg: &str) -> bool {
        self.text().contains(&format!(" {msg}"))
    }
    fn clear(&self) {
        let _ = std::fs::write(&self.0, "");
    }
    /// The distinct messages, `;`-joined (for FAIL lines).
    fn messages(&self) -> String {
        let mut m: Vec<String> = self
            .text()
            .lines()
            .map(|l| l.split_once(' ').map_or(l, |x| x.1).to_string())
            .collect();
        m.sort();
        m.dedup();
        m.iter().map(|x| format!("{x};")).collect()
    }
    fn last_status(&self) -> String {
        let text = self.text();
        text.lines()
            .filter_map(|l| l.find("STATUS=").map(|i| l[i..].to_string()))
            .next_back()
            .unwrap_or_default()
    }
}

/// Milliseconds from `from` to `to`, negative when `to` came first.
fn ms_between(from: Instant, to: Instant) -> i64 {
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    ms(to.saturating_duration_since(from)) - ms(from.saturating_duration_since(to))
}

/// `timeout 60 systemd-socket-activate -l SOCK -E ... BIN serve`, output to `log`.
fn socket_activate(
    s: &Setup,
    sock: &Path,
    notify: &Path,
    idle: Option<&str>,
    debug: bool,
    log: &Path,
) -> Result<Command> {
    let mut c = Command::new("timeout");
    c.args(["60", "systemd-socket-activate", "-l"]).arg(sock);
    let mut env = vec![
        format!("NOTIFY_SOCKET={}", notify.display()),
        format!("SNIX_LOWER_STORE_LOWER_DIR={}", s.lower().display()),
        format!("SNIX_LOWER_STORE_STATE_DIR={}", s.demo.join("state").display()),
    ];
    env.extend(idle.map(|d| format!("SNIX_LOWER_STORE_IDLE_EXIT_AFTER={d}")));
    env.push("SNIX_LOWER_STORE_LOG_TARGET=stderr".into());
    if debug {
        env.push("SNIX_LOWER_STORE_LOG_LEVEL=debug".into());
    }
    for e in env {
        c.arg("-E").arg(e);
    }
    let f = log_file(log)?;
    c.arg(&s.bin)
        .arg("serve")
        .stdout(f.try_clone()?)
        .stderr(f)
        .stdin(Stdio::null());
    Ok(c)
}

/// Part a, in order; a check that cannot go on ends the part with a FAIL.
pub(crate) fn run(s: &Setup, r: &mut Report) -> Result<()> {
    let pick = s.pick.as_ref().context("no demo paths picked")?;
    let mut bg = Bg::default();
    let notify = Notify(s.t("notify.log"));
    notify.clear();
    let nsock = s.t("notify");
    let mut listen = Command::new("python3");
    listen.arg(&s.helper).arg("notify-listen").arg(&nsock).arg(&notify.0);
    bg.spawn(&mut listen, "the notify listener")?;
    if !wait_for(Duration::from_secs(5), POLL, || is_socket(&nsock)) {
        r.fail("a: notify listener", "did not start");
        return Ok(());
    }
    if !first_activation(s, r, pick, &notify)? {
        return Ok(());
    }
    sigterm(s, r, pick, &notify)?;
    if !reactivation(s, r, pick, &mut bg)? {
        return Ok(());
    }
    busy(s, r, pick, &mut bg)
}

fn is_socket(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

/// a1: systemd-socket-activate execs the daemon on the first connection:
/// answered, READY=1, STATUS=, idle exit 0 within 2000..2500 ms. Returns
/// false when the part cannot go on.
fn first_activation(s: &Setup, r: &mut Report, pick: &Pick, notify: &Notify) -> Result<bool> {
    let sock = s.t("sa.sock");
    let log = s.t("sa.log");
    let mut sa = socket_activate(s, &sock, &s.t("notify"), Some("2s"), true, &log)?
        .spawn()
        .context("cannot start systemd-socket-activate")?;
    if !wait_for(Duration::from_secs(5), POLL, || is_socket(&sock)) {
        r.fail(
            "a: systemd-socket-activate",
            &format!("no socket; {}", file_tail(&log, 3)),
        );
        term(&sa);
        let _ = sa.wait();
        return Ok(false);
    }
    // The idle count starts when the daemon sees this connection close:
    // after q_start, before (or, seen late, just after) q_end.
    let q_start = Instant::now();
    let out = query(s, &sock, &pick.top);
    let q_end = Instant::now();
    // The daemon's exit, timed by a 20 ms poll (the checks below may take
    // seconds before this part waits for it).
    let exit = std::thread::spawn(move || loop {
        match sa.try_wait() {
            Ok(Some(st)) => return (code(st), Instant::now()),
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => return (-1, Instant::now()),
        }
    });
    let name = "a: first request after socket activation answered";
    r.check_lazy(out == "valid", name, &format!("IsValidPath {}", pick.top), || {
        format!("{out}; daemon: {}", file_tail(&log, 3))
    });
    let name = "a: READY=1 sent to NOTIFY_SOCKET";
    let ready = wait_for(Duration::from_secs(5), POLL, || notify.seen("READY=1"));
    r.check_lazy(ready, name, "", || format!("messages: {}", notify.messages()));
    wait_for(Duration::from_secs(6), POLL, || notify.seen("STATUS="));
    let want = format!("STATUS={} paths indexed", pick.npaths);
    r.check_lazy(notify.seen(&want), "a: STATUS= sent", &notify.last_status(), || {
        format!("want '{want}, ...'; got: {}", notify.last_status())
    });
    // Exact on the early side: the exit comes at least 2000 ms after q_start
    // (the connection closed after it); late by at most 500 ms after q_end
    // (the 20 ms poll, the daemon's shutdown and the process exit).
    let (rc, at) = exit.join().unwrap_or((-1, Instant::now()));
    let (lo, hi) = (ms_between(q_start, at), ms_between(q_end, at));
    let name = "a: --idle-exit-after 2s exits 0 when idle";
    let when = format!("{hi}..{lo}ms after the last connection closed");
    r.check_lazy(
        rc == 0 && lo >= 2000 && hi <= 2500,
        name,
        &format!("exit {when}"),
        || {
            format!(
                "exit status {rc}, {when} (want 2000..2500; 124 = still running); {}",
                file_tail(&log, 3)
            )
        },
    );
    Ok(true)
}

/// a1b: SIGTERM -> STOPPING=1, exit 0.
fn sigterm(s: &Setup, r: &mut Report, pick: &Pick, notify: &Notify) -> Result<()> {
    notify.clear();
    let sock = s.t("sa2.sock");
    let log = s.t("sa2.log");
    let mut sa = socket_activate(s, &sock, &s.t("notify"), None, false, &log)?
        .spawn()
        .context("cannot start systemd-socket-activate")?;
    wait_for(Duration::from_secs(5), POLL, || is_socket(&sock));
    let out = query(s, &sock, &pick.top);
    wait_for(Duration::from_secs(5), POLL, || notify.seen("READY=1"));
    term(&sa);
    let pid = sa.id();
    wait_for(Duration::from_secs(15), POLL, || !testbed::nspawn::alive(pid));
    let rc = sa.wait().map_or(-1, code);
    let name = "a: SIGTERM: STOPPING=1 sent, exit 0";
    r.check_lazy(out == "valid" && rc == 0 && notify.seen("STOPPING=1"), name, "", || {
        format!(
            "query {out}, exit status {rc}, messages: {}; {}",
            notify.messages(),
            file_tail(&log, 3)
        )
    });
    Ok(())
}

/// `sdtest.py supervise SOCK LOG -- BIN serve`, the daemon's stderr to `dlog`.
fn supervise(s: &Setup, bg: &mut Bg, sock: &Path, log: &Path, dlog: &Path, idle: &str, notify: bool) -> Result<u32> {
    let mut c = Command::new("python3");
    c.arg(&s.helper)
        .arg("supervise")
        .arg(sock)
        .arg(log)
        .arg("--")
        .arg(&s.bin)
        .arg("serve");
    if notify {
        c.env("NOTIFY_SOCKET", s.t("notify"));
    }
    daemon_env(s, &mut c, Some(idle));
    c.stderr(log_file(dlog)?);
    bg.spawn(&mut c, "the socket-unit emulation (sdtest.py supervise)")
}

/// Lines of a supervisor log that contain ` WORD ` (start, exit).
fn sup_count(log: &Path, word: &str) -> usize {
    let pat = format!(" {word} ");
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&pat))
        .count()
}

/// Exit statuses of a supervisor log (its lines: TIME exit PID STATUS).
fn exit_statuses(log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains(" exit "))
        .map(|l| l.split_whitespace().nth(3).unwrap_or("").to_string())
        .collect()
}

/// Like `sort | uniq -c`, as "COUNT STATUS," pairs.
fn counted(mut v: Vec<String>) -> String {
    v.sort();
    let mut out = String::new();
    let mut i = 0;
    while i < v.len() {
        let n = v[i..].iter().take_while(|x| **x == v[i]).count();
        out.push_str(&format!(" {n} {},", v[i]));
        i += n;
    }
    out
}

/// a2: the listening socket outlives the daemon, as with a .socket unit.
/// Queries straddle the idle exit (2 s) on purpose: whether each lands
/// before or after the exit is left to chance, but every one must be
/// answered. Then, deterministically, twice: wait until the supervisor has
/// seen the daemon exit (up to 30 s, whatever the load), and the next query
/// must be answered by a new activation. No assertion depends on how long a
/// step took. Returns false when the part cannot go on.
fn reactivation(s: &Setup, r: &mut Report, pick: &Pick, bg: &mut Bg) -> Result<bool> {
    let (sock, log) = (s.t("sup.sock"), s.t("sup.log"));
    let dlog = s.t("sup.daemon.log");
    let sup = supervise(s, bg, &sock, &log, &dlog, "2s", true)?;
    let name = "a: idle exit then re-activation by the next client, no failed request";
    if !wait_for(Duration::from_secs(5), POLL, || is_socket(&sock)) {
        r.fail("a: re-activation", "supervisor socket missing");
        return Ok(false);
    }
    let (mut failed, mut n, mut no_exit) = (0, 0, 0);
    let mut ask = |after: &str| {
        n += 1;
        let out = query(s, &sock, &pick.top);
        if out != "valid" {
            failed += 1;
            println!("  query {n} ({after}): {out}");
        }
        n
    };
    let mut last = 0;
    for d in ["0", "0.3", "1.9", "1.97", "2.0", "2.03", "2.1"] {
        std::thread::sleep(Duration::from_secs_f64(d.parse().unwrap_or(0.0)));
        last = ask(&format!("{d}s after the previous one"));
    }
    for d in 1..=2 {
        // The daemon running now exits once idle; wait for that exit.
        let starts = sup_count(&log, "start");
        if !wait_for(Duration::from_secs(30), POLL, || sup_count(&log, "exit") >= starts) {
            no_exit += 1;
            println!("  no idle exit within 30s of query {last}");
        }
        last = ask(&format!("after idle exit {d}"));
        if sup_count(&log, "start") < starts + 1 {
            no_exit += 1;
            println!("  query {last} was not answered by a new activation");
        }
    }
    bg.stop(sup);
    let starts = sup_count(&log, "start");
    let statuses = exit_statuses(&log);
    let bad = statuses.iter().filter(|st| *st != "0").count();
    let exits = counted(statuses);
    let ok = failed == 0 && no_exit == 0 && starts >= 3 && bad == 0;
    let detail = format!("{n} queries, {starts} activations, exit statuses (count status): {exits}");
    r.check_lazy(ok, name, &detail, || {
        format!(
            "{failed} of {n} queries failed, {no_exit} idle exits or re-activations missing, {starts} activations, \
             exit statuses (count status): {exits}; {}",
            file_tail(&dlog, 3)
        )
    });
    Ok(true)
}

/// a3: clients coming more often than the idle timeout keep one daemon up:
/// "exit after D with no open connection" counts from the last connection.
/// One process connects every 1.5 s for 12 s (idle 4 s, 3 idle periods):
/// each gap outlasts the daemon's idle check period (D/4 = 1 s), so the check
/// runs in every gap and a timer counted from the start or the first
/// connection exits; a false failure would need one gap to stretch from
/// 1.5 s to 4 s on a loaded machine (no process start per query). The
/// longest gap is printed.
fn busy(s: &Setup, r: &mut Report, pick: &Pick, bg: &mut Bg) -> Result<()> {
    let (sock, log) = (s.t("busy.sock"), s.t("busy.log"));
    std::fs::write(&log, "")?;
    let sup = supervise(s, bg, &sock, &log, &s.t("busy.daemon.log"), "4s", false)?;
    wait_for(Duration::from_secs(5), POLL, || is_socket(&sock));
    let qlog = s.t("busy.query.log");
    let out = capture(
        Command::new("timeout")
            .args(["60", "python3"])
            .arg(&s.helper)
            .arg("query-every")
            .arg(&sock)
            .arg(&pick.top)
            .args(["1.5", "12"]),
    )?;
    std::fs::write(&qlog, &out.stderr)?;
    let counts: Vec<String> = out.stdout().split_whitespace().map(str::to_string).collect();
    let get = |i: usize| counts.get(i).cloned();
    let (n, failed, max_gap) = (get(0), get(1), get(2));
    bg.stop(sup);
    let starts = sup_count(&log, "start");
    let what = format!(
        "a: no idle exit while clients keep coming ({} queries 1.5s apart for 12s, idle 4s)",
        n.as_deref().unwrap_or("0")
    );
    let ok = max_gap.is_some() && failed.as_deref() == Some("0") && starts == 1;
    let gap = max_gap.clone().unwrap_or_else(|| "?".into());
    r.check_lazy(
        ok,
        &what,
        &format!("1 activation, longest gap between connections {gap}ms"),
        || {
            let lifetimes: Vec<String> = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains(" start ") || l.contains(" exit "))
                .map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    format!("{} {}", f.get(1).unwrap_or(&""), f.first().unwrap_or(&""))
                })
                .collect();
            format!(
                "{starts} activations, {} failed queries, longest gap {gap}ms; {}; daemon lifetimes: {} ",
                failed.as_deref().unwrap_or("?"),
                file_tail(&qlog, 2),
                lifetimes.join(" ")
            )
        },
    );
    Ok(())
}
