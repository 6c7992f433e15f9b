//! Progress of the long commands (`import`, `build-index`, `verify`) at
//! the terminal and to systemd: the [`Sink`] behind the
//! [`Progress`] handle the importers and the verifier call with the phase
//! they are in and how many entries of it are done (of a total when known).
//!
//! It shows the same state three ways, chosen once when it is made:
//! - on a terminal, a progress bar on stderr (indicatif), one line a phase;
//! - on a stderr that is not a terminal (a pipe, a file, the journal), plain
//!   lines `<command>: <phase> <done>/<total> (<pct>%)`: one when a phase
//!   starts, at most one every interval while it runs, and one when it ends;
//! - with NOTIFY_SOCKET set (a systemd unit), the line's text as `STATUS=`,
//!   at the same moments, so `systemctl status` tells how far a command is.
//!
//! Invariants: it never fails the command (a notify socket that cannot be
//! reached is ignored), `--quiet` silences the terminal but not `STATUS=`,
//! and a silent handle ([`Progress::default`]) costs one branch per call.

use snix_lower_store_types::progress::{Progress, Sink};

use std::io::{IsTerminal, Write};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often plain lines and `STATUS=` are written while a phase runs.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);

/// Where the terminal side of the progress goes.
pub enum Display {
    /// Nothing (`--quiet`).
    Silent,
    /// A progress bar on stderr (stderr is a terminal).
    Bar,
    /// Plain lines into this writer (stderr when it is not a terminal).
    Lines(Box<dyn Write + Send>),
}

/// The terminal and `STATUS=` side of one command's progress.
struct Reporter(Mutex<State>);

/// What the handle knows and where it writes.
struct State {
    command: &'static str,
    display: Display,
    notify: Option<Notifier>,
    every: Duration,
    phase: Option<Phase>,
    /// On a terminal: the bars of all phases, finished ones kept above.
    bars: Option<indicatif::MultiProgress>,
    bar: Option<indicatif::ProgressBar>,
}

/// The phase running now.
struct Phase {
    name: String,
    total: Option<u64>,
    done: u64,
    /// When a line was last written, and for which count.
    shown_at: Instant,
    shown: u64,
}

impl Phase {
    /// `<phase> <done>/<total> (<pct>%)`, or `<phase> <done>` without a total.
    fn text(&self) -> String {
        match self.total {
            Some(t) if t > 0 => format!("{} {}/{t} ({}%)", self.name, self.done, self.done * 100 / t),
            Some(t) => format!("{} {}/{t}", self.name, self.done),
            None if self.done == 0 => self.name.clone(),
            None => format!("{} {}", self.name, self.done),
        }
    }
}

/// A handle for `command` as a user runs it: a bar when stderr is a
/// terminal, plain lines every [`DEFAULT_INTERVAL`] when not, nothing on
/// the terminal with `quiet`; `STATUS=` when NOTIFY_SOCKET is set.
pub fn for_command(command: &'static str, quiet: bool) -> Progress {
    let display = if quiet {
        Display::Silent
    } else if std::io::stderr().is_terminal() {
        Display::Bar
    } else {
        Display::Lines(Box::new(std::io::stderr()))
    };
    let notify = std::env::var_os("NOTIFY_SOCKET").map(PathBuf::from);
    new(command, display, notify, DEFAULT_INTERVAL)
}

/// A handle writing to `display` and, with `notify_socket` (a path, or
/// `@name` for an abstract socket, as systemd's NOTIFY_SOCKET), `STATUS=`
/// datagrams, at most one of each every `every` while a phase runs.
pub fn new(command: &'static str, display: Display, notify_socket: Option<PathBuf>, every: Duration) -> Progress {
    let notify = notify_socket.and_then(|p| Notifier::new(&p));
    if matches!(display, Display::Silent) && notify.is_none() {
        return Progress::default();
    }
    let bars = matches!(display, Display::Bar).then(indicatif::MultiProgress::new);
    let state = State {
        command,
        display,
        notify,
        every,
        phase: None,
        bars,
        bar: None,
    };
    Progress::to(Arc::new(Reporter(Mutex::new(state))))
}

impl Sink for Reporter {
    /// Ends the phase running (shown at its final count) and starts `name`
    /// with `total` entries when known.
    fn phase(&self, name: &str, total: Option<u64>) {
        self.with(|s| {
            s.end_phase();
            s.phase = Some(Phase {
                name: name.to_owned(),
                total,
                done: 0,
                shown_at: Instant::now(),
                shown: 0,
            });
            s.start_bar();
            s.show();
        });
    }

    /// `n` more entries of the running phase are done.
    fn inc(&self, n: u64) {
        self.with(|s| {
            let Some(p) = s.phase.as_mut() else { return };
            p.done += n;
            if let Some(bar) = &s.bar {
                bar.inc(n);
            }
            if p.shown_at.elapsed() >= s.every {
                s.show();
            }
        });
    }

    /// Ends the running phase (shown at its final count); `summary`, when
    /// given, becomes the last `STATUS=`.
    fn finish(&self, summary: Option<&str>) {
        self.with(|s| {
            s.end_phase();
            if let (Some(n), Some(text)) = (&s.notify, summary) {
                n.send(&format!("{}: {text}", s.command));
            }
        });
    }
}

impl Reporter {
    fn with(&self, f: impl FnOnce(&mut State)) {
        // A panic while holding the lock leaves a state that is still fine
        // to show: take it back rather than panic again.
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s);
    }
}

impl State {
    /// Writes the running phase's line and `STATUS=` now.
    fn show(&mut self) {
        let Some(p) = self.phase.as_mut() else { return };
        p.shown_at = Instant::now();
        p.shown = p.done;
        let line = format!("{}: {}", self.command, p.text());
        if let Display::Lines(w) = &mut self.display {
            // Progress never fails the command: a closed stderr is ignored.
            let _ = writeln!(w, "{line}");
            let _ = w.flush();
        }
        if let Some(n) = &self.notify {
            n.send(&line);
        }
    }

    /// Shows the running phase at its final count (unless it just was) and
    /// leaves its bar on the screen.
    fn end_phase(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
        if self.phase.as_ref().is_some_and(|p| p.done != p.shown) {
            self.show();
        }
        self.phase = None;
    }

    /// A bar (or a spinner, without a total) for the phase just started.
    fn start_bar(&mut self) {
        let (Some(bars), Some(p)) = (&self.bars, &self.phase) else {
            return;
        };
        // Hidden until added: the multi-progress gives it the terminal.
        let bar = indicatif::ProgressBar::hidden();
        let template = match p.total {
            Some(t) => {
                bar.set_length(t);
                "{prefix}: {msg} [{bar:30}] {human_pos}/{human_len} ({percent}%) {elapsed} eta {eta}"
            }
            None => "{prefix}: {msg} {spinner} {elapsed}",
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(self.command);
        bar.set_message(p.name.clone());
        let bar = bars.add(bar);
        bar.enable_steady_tick(Duration::from_millis(200));
        self.bar = Some(bar);
    }
}

/// An unbound datagram socket and systemd's notification socket.
struct Notifier {
    socket: UnixDatagram,
    to: std::os::unix::net::SocketAddr,
}

impl Notifier {
    /// `None` when the address is unusable: progress is best effort.
    fn new(path: &std::path::Path) -> Option<Notifier> {
        use std::os::unix::ffi::OsStrExt;
        let bytes = path.as_os_str().as_bytes();
        let to = match bytes.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name).ok()?
            }
            None => std::os::unix::net::SocketAddr::from_pathname(path).ok()?,
        };
        let socket = UnixDatagram::unbound().ok()?;
        Some(Notifier { socket, to })
    }

    fn send(&self, status: &str) {
        // One line only: a newline would start another assignment.
        let msg = format!("STATUS={}", status.replace('\n', " "));
        let _ = self.socket.send_to_addr(msg.as_bytes(), &self.to);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn run(p: &Progress) {
        p.phase("reading", None);
        p.phase("checking", Some(4));
        for _ in 0..4 {
            p.inc(1);
        }
        p.phase("writing", Some(3));
        p.inc(3);
        p.finish(Some("done: 3 added"));
    }

    #[test]
    fn lines_at_phase_start_and_end_only_within_the_interval() {
        let out = Captured::default();
        let p = new(
            "import",
            Display::Lines(Box::new(out.clone())),
            None,
            Duration::from_secs(3600),
        );
        run(&p);
        assert_eq!(
            out.text(),
            "import: reading\n\
             import: checking 0/4 (0%)\n\
             import: checking 4/4 (100%)\n\
             import: writing 0/3 (0%)\n\
             import: writing 3/3 (100%)\n"
        );
    }

    #[test]
    fn a_line_for_every_step_once_the_interval_passed() {
        let out = Captured::default();
        let p = new("verify", Display::Lines(Box::new(out.clone())), None, Duration::ZERO);
        p.phase("checking", Some(2));
        p.inc(1);
        p.inc(1);
        p.finish(None);
        assert_eq!(
            out.text(),
            "verify: checking 0/2 (0%)\nverify: checking 1/2 (50%)\nverify: checking 2/2 (100%)\n"
        );
    }

    #[test]
    fn status_datagrams_to_the_notify_socket_quiet_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_nonblocking(true).unwrap();
        let p = new("import", Display::Silent, Some(path), Duration::from_secs(3600));
        run(&p);
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8(buf[..n].to_vec()).unwrap());
        }
        assert_eq!(
            got,
            [
                "STATUS=import: reading",
                "STATUS=import: checking 0/4 (0%)",
                "STATUS=import: checking 4/4 (100%)",
                "STATUS=import: writing 0/3 (0%)",
                "STATUS=import: writing 3/3 (100%)",
                "STATUS=import: done: 3 added",
            ]
        );
    }

    #[test]
    fn quiet_without_systemd_is_the_silent_handle() {
        let p = new("import", Display::Silent, None, DEFAULT_INTERVAL);
        assert_eq!(format!("{p:?}"), "Progress(silent)");
        // And an unreachable socket is no error.
        let p = new(
            "import",
            Display::Silent,
            Some("/nonexistent/notify".into()),
            Duration::ZERO,
        );
        run(&p);
    }
}
