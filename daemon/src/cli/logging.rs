//! Logging set up from `--log-level` and `--log-target`: journald (fields
//! unprefixed, syslog priorities as journalctl -p expects) or stderr.
//!
//! Invariant: runs once, before any subcommand; RUST_LOG overrides the level.

use snix_lower_store::systemd;

use super::flags::LogTarget;

pub(crate) fn init_logging(level: &str, target: LogTarget) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let journald = match target {
        LogTarget::Journald => true,
        LogTarget::Stderr => false,
        LogTarget::Auto => systemd::stderr_is_journal(),
    };
    if journald {
        match tracing_journald::layer() {
            Ok(layer) => {
                // Fields keep their names (OP, STORE_PATH, …) without a prefix.
                // Syslog priorities as journalctl -p expects them: info is 6, debug 7.
                let priorities = tracing_journald::PriorityMappings {
                    info: tracing_journald::Priority::Informational,
                    debug: tracing_journald::Priority::Debug,
                    ..tracing_journald::PriorityMappings::new()
                };
                let layer = layer
                    .with_field_prefix(None)
                    .with_syslog_identifier("snix-lower-store".into())
                    .with_priority_mappings(priorities);
                tracing_subscriber::registry().with(filter).with(layer).init();
                return;
            }
            Err(e) => eprintln!("snix-lower-store: journald unavailable ({e}); logging to stderr"),
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}
