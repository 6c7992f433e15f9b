//! systemd glue: sockets passed by socket activation (listenfd), readiness,
//! status, stopping and watchdog notifications (sd_notify), and whether
//! stderr is the journal (JOURNAL_STREAM).
//!
//! All of it is a no-op outside systemd: `notify` does nothing without
//! NOTIFY_SOCKET, and no sockets are passed without LISTEN_FDS.

use std::os::unix::fs::MetadataExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::server::Server;

/// Unix stream sockets passed by systemd (LISTEN_FDS for this LISTEN_PID).
/// A passed socket of another kind is an error naming it.
pub fn passed_listeners() -> Result<Vec<std::os::unix::net::UnixListener>, String> {
    let mut fds = listenfd::ListenFd::from_env();
    let mut out = Vec::new();
    for i in 0..fds.len() {
        match fds.take_unix_listener(i) {
            Ok(Some(l)) => out.push(l),
            Ok(None) => {}
            Err(e) => {
                return Err(format!(
                    "socket activation: passed file descriptor {} is not a listening unix stream socket ({e}); \
                     use ListenStream=/path in the .socket unit",
                    3 + i
                ))
            }
        }
    }
    Ok(out)
}

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn stopping(status: &str) {
    notify(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// True when stderr is connected to the journal (systemd sets JOURNAL_STREAM
/// to the device and inode of the stream it gave us).
pub fn stderr_is_journal() -> bool {
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(meta.dev()) && ino.parse::<u64>().ok() == Some(meta.ino())
}

/// The counters of the STATUS= line. Panics are always shown, 0 included,
/// so a monitor can alert on the field.
pub(crate) fn status_counts(indexed: u64, open: u64, requests: u64, panics: u64) -> String {
    format!("{indexed} paths indexed, {open} open connections, {requests} requests served, {panics} panics")
}

/// The STATUS= line: what `systemctl status` shows.
pub fn status_text(server: &Server, indexed: u64) -> String {
    let mut s = status_counts(
        indexed,
        server.stats.open_connections.load(Ordering::Relaxed),
        server.stats.requests.load(Ordering::Relaxed),
        crate::panics::count(),
    );
    if let Some(d) = server.store.backend.status_detail() {
        s.push_str("; ");
        s.push_str(&d);
    }
    s
}

/// Refresh STATUS every 2 s (the path count every 30 s) and ping the
/// watchdog at half its interval when WATCHDOG_USEC is set.
pub fn spawn_status_and_watchdog(server: Arc<Server>) {
    let mut usec = 0u64;
    let watchdog = sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec / 2));
    let tick = watchdog.map_or(Duration::from_secs(2), |w| w.min(Duration::from_secs(2)));
    tokio::spawn(async move {
        let mut indexed = server.store.backend.count().await.unwrap_or(0);
        let mut last_count = std::time::Instant::now();
        let mut last_status = String::new();
        let mut interval = tokio::time::interval(tick);
        loop {
            interval.tick().await;
            if last_count.elapsed() >= Duration::from_secs(30) {
                indexed = server.store.backend.count().await.unwrap_or(indexed);
                last_count = std::time::Instant::now();
            }
            let status = status_text(&server, indexed);
            let mut states = Vec::new();
            if watchdog.is_some() {
                states.push(NotifyState::Watchdog);
            }
            if status != last_status {
                states.push(NotifyState::Status(&status));
            }
            if !states.is_empty() {
                notify(&states);
            }
            last_status = status;
        }
    });
}

/// Parse "30s", "5m", "2h", "500ms" or a number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (examples: 30s, 5m, 1h, 500ms)"))?;
    let secs = match unit.trim() {
        "" | "s" | "sec" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        u => return Err(format!("unknown unit '{u}' in duration '{s}' (use ms, s, m or h)")),
    };
    // from_secs_f64 would panic on a value too large for a Duration.
    Duration::try_from_secs_f64(secs).map_err(|_| format!("duration '{s}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert!(parse_duration("3Бs").is_err() && parse_duration("Б").is_err());
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("5 fortnights").is_err());
        assert!(parse_duration("99999999999999999999999h").is_err());
    }

    #[test]
    fn status_line_shows_the_panic_count() {
        assert_eq!(
            status_counts(12, 1, 345, 0),
            "12 paths indexed, 1 open connections, 345 requests served, 0 panics"
        );
        assert!(status_counts(0, 0, 0, 2).ends_with(", 2 panics"));
    }
}
