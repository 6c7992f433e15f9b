//! `serve`: the socket (bound by us, or passed by systemd), the store it
//! answers from (the embedded index, an image's own, or a PathInfoService),
//! the optional gRPC server, and the life cycle: ready, serving, draining.
//!
//! Invariants: exactly one socket source (`--listen` or socket activation);
//! an image's index is opened read-only and checked against the lower dir;
//! a stop drains requests in flight within `--shutdown-timeout`.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use snix_lower_store::server::ops::LowerStore;
use snix_lower_store::server::{self, Server};
use snix_lower_store::systemd;
use snix_lower_store_index::image;
use snix_lower_store_protocol::wire::Limits;
use snix_lower_store_types::lower::LowerDir;

use super::{open_store, served_index, store_dir};
use crate::cli::flags::ServeArgs;

pub(crate) fn chmod_chgrp(path: &Path, mode: &str, group: Option<&str>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let m = u32::from_str_radix(mode.trim_start_matches("0o"), 8)
        .with_context(|| format!("--socket-mode '{mode}' is not octal"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(m))
        .with_context(|| format!("chmod {}", path.display()))?;
    if let Some(g) = group {
        let Some(gid) = snix_lower_store::server::peer::group_gid(g) else {
            bail!("--socket-group '{g}': no such group");
        };
        std::os::unix::fs::chown(path, None, Some(gid)).with_context(|| format!("chgrp {} {}", g, path.display()))?;
    }
    Ok(())
}

/// Each connection is a file descriptor: lift the soft limit towards the
/// hard one so --max-connections is reachable.
pub(crate) fn raise_fd_limit(max_connections: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut rl = getrlimit(Resource::Nofile);
    // `None` is unlimited.
    let want = (max_connections + 256).min(rl.maximum.unwrap_or(u64::MAX));
    if rl.current.is_some_and(|cur| want > cur) {
        rl.current = Some(want);
        if setrlimit(Resource::Nofile, rl).is_err() {
            tracing::warn!("could not raise the open file limit to {want}");
        }
    }
}

pub(crate) fn bind(listen: &Path) -> Result<tokio::net::UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(listen) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            bail!(
                "--listen {}: exists and is not a socket; refusing to replace it",
                listen.display()
            );
        }
        std::fs::remove_file(listen).with_context(|| format!("removing stale socket {}", listen.display()))?;
    }
    if let Some(parent) = listen.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    tokio::net::UnixListener::bind(listen).with_context(|| format!("binding {}", listen.display()))
}

/// `serve`: checks where to listen, then serves until SIGTERM, Ctrl-C or
/// `--idle-exit-after`, and finishes the requests in flight.
pub(crate) fn run(args: ServeArgs) -> Result<ExitCode> {
    let conn_limits = snix_lower_store::server::ConnLimits {
        max_connections: args.max_connections,
        idle_timeout: args.idle_timeout,
        handshake_timeout: args.handshake_timeout,
    };
    raise_fd_limit(args.max_connections);
    let passed = systemd::passed_listeners().map_err(anyhow::Error::msg)?;
    if !passed.is_empty() && args.listen.is_some() {
        bail!(
            "serve: systemd passed {} socket(s) and --listen is set too; use one or the other",
            passed.len()
        );
    }
    if passed.is_empty() && args.listen.is_none() {
        bail!("serve: no socket: give --listen PATH, or start under socket activation (snix-lower-store.socket)");
    }
    let rt = tokio::runtime::Runtime::new()?;
    let stop = rt.block_on(async {
        let server = Arc::new(Server {
            store: serve_store(&args).await?,
            trusted_users: args.trusted_users.clone(),
            limits: Limits {
                max_string: args.max_string,
                max_list: args.max_list,
            },
            conn_limits,
            daemon_version: snix_lower_store::daemon_version(),
            stats: Default::default(),
        });
        if let Some(addr) = args.grpc_listen.clone() {
            spawn_grpc_server(server.clone(), addr, args.grpc_deriver_name);
        }
        let (listeners, shown) = listeners(&args, passed)?;
        serve_until_stopped(server, listeners, &shown, &args).await
    })?;
    rt.shutdown_timeout(Duration::from_secs(1));
    tracing::info!(reason = ?stop, "stopped");
    Ok(ExitCode::SUCCESS)
}

/// The store `serve` answers from: the embedded index, or a PathInfoService
/// with its List snapshot refreshed in the background.
pub(crate) async fn serve_store(args: &ServeArgs) -> Result<LowerStore> {
    let Some(addr) = &args.path_info_service else {
        return serve_index(args);
    };
    let sd = store_dir(&args.store.store_dir)?;
    let lower = LowerDir::open(&args.lower_dir).map_err(anyhow::Error::msg)?;
    let g = snix_lower_store::grpc::client::GrpcBackend::connect_with(
        addr,
        lower.clone(),
        sd.clone(),
        args.grpc_timeout,
        args.ca_proof.options(),
    )
    .await
    .map_err(anyhow::Error::msg)?;
    g.spawn_refresh_loop(args.refresh_interval);
    Ok(LowerStore {
        backend: snix_lower_store::backend::grpc(g),
        lower,
        store_dir: sd,
    })
}

/// The embedded index `serve` answers from: `--index`, the state dir's, the
/// image's own, or a new one in the state dir (the rule in `--index`'s help).
pub(crate) fn serve_index(args: &ServeArgs) -> Result<LowerStore> {
    let in_image = image::default_location(&args.lower_dir, &args.store.store_dir).filter(|f| f.exists());
    let file = match (&args.index, in_image) {
        (Some(f), _) => f.clone(),
        (None, Some(f)) if !args.store.state_dir.join("index.sqlite").exists() => f,
        (None, _) => return open_store(&args.lower_dir, &args.store, true, !args.no_key_directory),
    };
    if !file.exists() {
        bail!(
            "serve: --index {}: no such file; write it with `snix-lower-store build-index`",
            file.display()
        );
    }
    let sd = store_dir(&args.store.store_dir)?;
    let lower = LowerDir::open(&args.lower_dir).map_err(anyhow::Error::msg)?;
    let index = image::open_checked(&file, sd.as_str(), &lower, args.image_check).context("serve")?;
    tracing::info!(index = %file.display(), "serving the image's own index, opened read-only");
    Ok(LowerStore {
        backend: served_index(index, !args.no_key_directory),
        lower,
        store_dir: sd,
    })
}

/// `--grpc-listen`: serves our path infos over gRPC until it fails (logged).
pub(crate) fn spawn_grpc_server(
    server: Arc<Server>,
    addr: String,
    deriver_name: snix_lower_store::grpc::convert::DeriverName,
) {
    tokio::spawn(async move {
        if let Err(e) = snix_lower_store::server::grpc::serve_with(server, &addr, deriver_name).await {
            tracing::error!(error = %e, "gRPC server stopped");
        }
    });
}

/// The sockets to accept on: `--listen` (bound, chmod and chgrp'ed), or the
/// ones systemd passed; and how to name them in the start log line.
pub(crate) fn listeners(
    args: &ServeArgs,
    passed: Vec<std::os::unix::net::UnixListener>,
) -> Result<(Vec<tokio::net::UnixListener>, String)> {
    if let Some(path) = &args.listen {
        let l = bind(path)?;
        chmod_chgrp(path, &args.socket_mode, args.socket_group.as_deref())?;
        return Ok((vec![l], path.display().to_string()));
    }
    let mut v = Vec::new();
    for l in passed {
        l.set_nonblocking(true)?;
        v.push(tokio::net::UnixListener::from_std(l)?);
    }
    let shown = format!("{} socket(s) from systemd", v.len());
    Ok((v, shown))
}

/// Tells systemd we are ready, accepts connections until a stop reason, then
/// drains the requests in flight within `--shutdown-timeout` and removes the
/// `--listen` socket.
pub(crate) async fn serve_until_stopped(
    server: Arc<Server>,
    listeners: Vec<tokio::net::UnixListener>,
    shown: &str,
    args: &ServeArgs,
) -> Result<server::Stop> {
    server::log_start(&server, shown);
    let indexed = server.store.backend.count().await?;
    systemd::ready(&systemd::status_text(&server, indexed));
    systemd::spawn_status_and_watchdog(server.clone());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    let stop = server
        .clone()
        .run(listeners, args.idle_exit_after, shutdown)
        .await
        .context("accepting connections")?;
    systemd::stopping(&format!("stopping ({stop:?}): finishing requests in flight"));
    if !server.drain(args.shutdown_timeout).await {
        tracing::warn!(timeout = ?args.shutdown_timeout, "requests still in flight at shutdown; closing them");
    }
    if let Some(path) = &args.listen {
        let _ = std::fs::remove_file(path);
    }
    Ok(stop)
}
