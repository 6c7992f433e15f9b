//! Progress of `import`, `build-index` and `verify` as a user sees it, from
//! the real binary: plain lines on a stderr that is not a terminal, nothing
//! with `--quiet`, `STATUS=` datagrams on a NOTIFY_SOCKET (a unix datagram
//! socket bound by the test, as systemd's), and a bar on a terminal (a pty
//! made by `script`).
//!
//! Lines written while a phase runs depend on time (one every 2 s); the
//! assertions take the lines at phase starts and ends in order and accept
//! any others only if they are well-formed counts.

mod common;

use common::Fixture;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_snix-lower-store");

/// Width of the terminal `a_bar_on_a_terminal` makes.
const COLUMNS: usize = 120;

/// A bound notify socket and what has arrived on it.
struct Notify {
    path: PathBuf,
    sock: UnixDatagram,
}

impl Notify {
    fn new(dir: &Path) -> Notify {
        let path = dir.join("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_nonblocking(true).unwrap();
        Notify { path, sock }
    }

    fn received(&self) -> Vec<String> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        got
    }
}

/// Runs the binary with `args` and NOTIFY_SOCKET; (stdout, stderr).
fn run(notify: &Notify, args: &[&std::ffi::OsStr]) -> (String, String) {
    let out = Command::new(BIN)
        .args(["--log-target", "stderr"])
        .args(args)
        .env("NOTIFY_SOCKET", &notify.path)
        .output()
        .unwrap();
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{args:?}: {se}");
    (so, se)
}

/// `want` occur in `got` in this order; every other line starting with
/// `prefix` is a count of a phase in `want` (written while it ran).
fn in_order(got: &[String], want: &[String], prefix: &str) {
    let mut next = 0;
    for line in got.iter().filter(|l| l.starts_with(prefix)) {
        if next < want.len() && *line == want[next] {
            next += 1;
            continue;
        }
        let count = line
            .rsplit_once(' ')
            .map(|(_, c)| c.trim_end_matches('%').trim_start_matches('('));
        let well_formed = count.is_some_and(|c| c.bytes().all(|b| b.is_ascii_digit() || b == b'/'));
        assert!(
            well_formed,
            "unexpected line {line:?}; want {want:#?} in order, got {got:#?}"
        );
    }
    assert_eq!(next, want.len(), "missing {:?} (in order) in {got:#?}", want.get(next));
}

fn lines(s: &str) -> Vec<String> {
    s.lines().map(str::to_owned).collect()
}

/// The phase lines of an import of `n` new entries.
fn import_phases(cmd: &str, n: usize) -> Vec<String> {
    let counted = |phase: &str| {
        [
            format!("{cmd}: {phase} 0/{n} (0%)"),
            format!("{cmd}: {phase} {n}/{n} (100%)"),
        ]
    };
    let mut v = vec![format!("{cmd}: reading the source")];
    v.extend(counted("checking"));
    v.push(format!("{cmd}: proving content addresses"));
    v.extend(counted("writing"));
    v.extend(counted("writing references"));
    v.push(format!("{cmd}: building indexes and committing"));
    v
}

fn registration(f: &Fixture) -> PathBuf {
    let reg = f.dir.path().join("reg");
    std::fs::write(&reg, snix_lower_store_testkit::demo::registration(&f.sd, &f.entries)).unwrap();
    reg
}

#[test]
fn import_and_verify_report_lines_and_status() {
    let f = Fixture::new();
    let notify = Notify::new(f.dir.path());
    let reg = registration(&f);
    let n = f.entries.len();
    let import = |quiet: bool| {
        let mut a: Vec<&std::ffi::OsStr> = vec!["import".as_ref(), "--registration".as_ref(), reg.as_os_str()];
        a.extend([
            "--lower-dir".as_ref(),
            f.lower.as_os_str(),
            "--state-dir".as_ref(),
            f.state.as_os_str(),
        ]);
        if quiet {
            a.push("--quiet".as_ref());
        }
        run(&notify, &a)
    };
    let (stdout, stderr) = import(false);
    assert_eq!(stdout, format!("imported {n} entries: {n} added, 0 already indexed\n"));
    in_order(&lines(&stderr), &import_phases("import", n), "import: ");
    let mut want: Vec<String> = import_phases("import", n)
        .iter()
        .map(|l| format!("STATUS={l}"))
        .collect();
    want.push(format!(
        "STATUS=import: imported {n} entries: {n} added, 0 already indexed"
    ));
    in_order(&notify.received(), &want, "STATUS=");

    // --quiet: not a line on stderr, but systemd still hears how far it is.
    let (_, stderr) = import(true);
    assert!(!stderr.contains("import: "), "{stderr}");
    let status = notify.received();
    let last = format!("STATUS=import: imported {n} entries: 0 added, {n} already indexed");
    assert!(
        status.contains(&format!("STATUS=import: checking {n}/{n} (100%)")),
        "{status:?}"
    );
    assert_eq!(status.last(), Some(&last), "{status:?}");

    let args = [
        "verify".as_ref(),
        "--lower-dir".as_ref(),
        f.lower.as_os_str(),
        "--state-dir".as_ref(),
        f.state.as_os_str(),
    ];
    let (_, stderr) = run(&notify, &args);
    let want = [
        "verify: reading the index".to_owned(),
        format!("verify: checking 0/{n} (0%)"),
        format!("verify: checking {n}/{n} (100%)"),
        format!("verified {n} paths: no problems"),
    ];
    in_order(&lines(&stderr), &want, "verif");
    let status = notify.received();
    assert_eq!(
        status.last().map(String::as_str),
        Some("STATUS=verify: 0 problem(s)"),
        "{status:?}"
    );
}

#[test]
fn build_index_reports_the_import_and_the_sealing() {
    let f = Fixture::new();
    let notify = Notify::new(f.dir.path());
    let reg = registration(&f);
    let out = f.dir.path().join("image-index");
    let args = [
        "build-index".as_ref(),
        "--registration".as_ref(),
        reg.as_os_str(),
        "--lower-dir".as_ref(),
        f.lower.as_os_str(),
        "--output".as_ref(),
        out.as_os_str(),
    ];
    let (_, stderr) = run(&notify, &args);
    let mut want = import_phases("build-index", f.entries.len());
    want.push("build-index: sealing".to_owned());
    in_order(&lines(&stderr), &want, "build-index: ");
    let status = notify.received();
    let last = status.last().cloned().unwrap_or_default();
    assert!(
        last.starts_with("STATUS=build-index: wrote ") && last.contains("paths indexed"),
        "{status:?}"
    );
}

/// On a terminal: a bar (indicatif), no plain lines. Needs util-linux's
/// `script` to make the pty; without it the test says so and passes.
#[test]
fn a_bar_on_a_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("a_bar_on_a_terminal: skipped, no `script` (util-linux) to make a pty");
        return;
    }
    let f = Fixture::new();
    let reg = registration(&f);
    let n = f.entries.len();
    // A terminal of COLUMNS (`script` without one gives its pty no size).
    let cmd = format!(
        "stty cols {COLUMNS} rows 40; {BIN} --log-target stderr import --registration {} --lower-dir {} --state-dir {}",
        reg.display(),
        f.lower.display(),
        f.state.display()
    );
    let typescript = f.dir.path().join("typescript");
    let out = Command::new("script")
        .args(["-qec", &cmd])
        .arg(&typescript)
        .env("TERM", "xterm")
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{shown}");
    // The finished bar of each counted phase: full, at n of n.
    let full_bar = format!("[{}] {n}/{n} (100%)", "=".repeat(30));
    assert!(shown.contains(&format!("import: checking {full_bar}")), "{shown:?}");
    assert!(
        shown.contains(&format!("import: writing references {full_bar}")),
        "{shown:?}"
    );
    assert!(!shown.contains("(0%)\r\n"), "plain lines on a terminal: {shown:?}");
    // Each phase keeps its own line: the finished bars of the phases before
    // are still on the screen after the last one.
    let screen = screen(&shown);
    let kept = [
        "import: checking [",
        "import: writing [",
        "import: writing references [",
    ];
    for k in kept {
        assert!(
            screen.iter().any(|l| l.starts_with(k) && l.contains("(100%)")),
            "{k}: {screen:#?}"
        );
    }
}

/// The lines a terminal of `COLUMNS` shows at the end of `raw`: text
/// (wrapped as a terminal does, at the next character after a full line),
/// `\r`, `\n` and the cursor-up and clear sequences indicatif writes
/// (`ESC[<n>A`, `ESC[K`, `ESC[2K`, `ESC[J`).
fn screen(raw: &str) -> Vec<String> {
    let mut lines: Vec<Vec<char>> = vec![Vec::new()];
    let (mut row, mut col) = (0usize, 0usize);
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => col = 0,
            '\n' => {
                row += 1;
                if row == lines.len() {
                    lines.push(Vec::new());
                }
            }
            '\x1b' if chars.peek() == Some(&'[') => {
                chars.next();
                let mut arg = String::new();
                let mut cmd = ' ';
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        cmd = c;
                        break;
                    }
                    arg.push(c);
                }
                match (cmd, arg.as_str()) {
                    ('A', n) => row = row.saturating_sub(n.parse().unwrap_or(1)),
                    ('K', "2") => lines[row].clear(),
                    ('K', _) => lines[row].truncate(col),
                    ('J', _) => {
                        lines[row].truncate(col);
                        lines.truncate(row + 1);
                    }
                    _ => {}
                }
            }
            c => {
                if col == COLUMNS {
                    (row, col) = (row + 1, 0);
                    if row == lines.len() {
                        lines.push(Vec::new());
                    }
                }
                let line = &mut lines[row];
                if col < line.len() {
                    line[col] = c;
                } else {
                    line.resize(col, ' ');
                    line.push(c);
                }
                col += 1;
            }
        }
    }
    let text = lines
        .into_iter()
        .map(|l| l.into_iter().collect::<String>().trim_end().to_owned());
    text.filter(|l| !l.is_empty()).collect()
}
