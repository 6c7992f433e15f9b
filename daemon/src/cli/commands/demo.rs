//! `demo`: a small generated lower store, indexed, served on a socket,
//! queried once as Nix would, with the Nix command line and configuration
//! that use it printed; then served until Ctrl-C (or, with `--check`, exit).

use anyhow::{Context, Result};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use snix_lower_store::overlay_url::OverlayUrl;
use snix_lower_store::server::Server;
use snix_lower_store_index::import::{self, ImportOptions};
use snix_lower_store_protocol::wire::Limits;
use snix_lower_store_types::lower::LowerDir;
use snix_lower_store_types::StoreDir;

use super::open_store;
use super::serve::bind;
use crate::cli::flags::StoreArgs;

/// `demo`: generates and indexes a small lower store in `dir`, serves it,
/// queries it once and prints how Nix uses it; then serves until Ctrl-C, or
/// exits with `check`.
pub(crate) fn run(dir: &Path, check: bool) -> Result<ExitCode> {
    let sd = StoreDir::new("/nix/store").map_err(anyhow::Error::msg)?;
    let lower = dir.join("lower/nix/store");
    let state = dir.join("state");
    let socket = dir.join("daemon.sock");
    let entries = demo_store(dir, &sd, &lower, &state)?;
    let store = open_store(
        &lower,
        &StoreArgs {
            state_dir: state.clone(),
            store_dir: sd.as_str().into(),
        },
        false,
        true,
    )?;
    let server = Arc::new(Server {
        store,
        trusted_users: vec!["root".into()],
        limits: Limits::default(),
        conn_limits: Default::default(),
        daemon_version: snix_lower_store::daemon_version(),
        stats: Default::default(),
    });
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let listener = bind(&socket)?;
        let srv = tokio::spawn(server.clone().run(vec![listener], None, std::future::pending()));
        let top = demo_query(&socket, &sd, &entries).await?;
        demo_usage(dir, &socket, &lower, &top);
        if check {
            return Ok(ExitCode::SUCCESS);
        }
        println!();
        println!("serving until interrupted (Ctrl-C)");
        tokio::select! {
            r = srv => { r??; }
            _ = tokio::signal::ctrl_c() => {}
        }
        let _ = std::fs::remove_file(&socket);
        Ok(ExitCode::SUCCESS)
    })
}

/// Writes the demo lower store and its registration file, and indexes it
/// (content checked).
pub(crate) fn demo_store(
    dir: &Path,
    sd: &StoreDir,
    lower: &Path,
    state: &Path,
) -> Result<Vec<snix_lower_store_types::path_info::PathInfo>> {
    let entries = snix_lower_store_testkit::demo::generate(lower, sd, 3, 3).context("writing the demo lower store")?;
    std::fs::create_dir_all(state)?;
    let reg = snix_lower_store_testkit::demo::registration(sd, &entries);
    let reg_file = dir.join("registration");
    std::fs::write(&reg_file, &reg)?;
    let batch = import::parse_registration(&reg, sd, &reg_file.display().to_string())?;
    let lower_dir = LowerDir::open(lower).map_err(anyhow::Error::msg)?;
    let report = import::import(
        state,
        sd,
        &lower_dir,
        batch,
        ImportOptions {
            check_content: true,
            ..Default::default()
        },
    )?;
    println!(
        "demo lower store: {} ({} paths, {} newly indexed)",
        lower.display(),
        entries.len(),
        report.added
    );
    Ok(entries)
}

/// Queries the demo daemon like Nix would (QueryPathInfo of the top path,
/// QueryReferrers of the bottom one) and prints the answers; returns the top
/// path.
pub(crate) async fn demo_query(
    socket: &Path,
    sd: &StoreDir,
    entries: &[snix_lower_store_types::path_info::PathInfo],
) -> Result<String> {
    use snix_lower_store_testkit::client::Client;
    let top = entries
        .iter()
        .find(|e| e.deriver.is_some())
        .map(|e| sd.display(&e.path))
        .unwrap_or_default();
    let mut c = Client::connect(socket, 38).await?;
    let info = c
        .query_path_info(&top)
        .await?
        .context("demo path missing from the daemon")?;
    let bottom = sd.display(&entries[0].path);
    let referrers = c
        .call(&snix_lower_store_protocol::request::QueryReferrers { path: bottom.clone() })
        .await?;
    println!(
        "served on {} ({})",
        socket.display(),
        c.daemon_version.clone().unwrap_or_default()
    );
    println!(
        "  QueryPathInfo {top}: narHash sha256:{} narSize {} references {}",
        info.nar_hash,
        info.nar_size,
        info.references.len()
    );
    println!("  QueryReferrers {bottom}: {} referrers", referrers.len());
    Ok(top)
}

/// Prints the Nix command line and configuration that use the demo daemon.
pub(crate) fn demo_usage(dir: &Path, socket: &Path, lower: &Path, top: &str) {
    let lower_url = OverlayUrl {
        socket,
        lower_dir: lower,
        upper_layer: &dir.join("upper"),
        state: None,
        root: None,
    };
    println!();
    println!("Query it directly with Nix:");
    println!(
        "  nix --extra-experimental-features nix-command path-info -r --store '{}' {top}",
        lower_url.lower_store()
    );
    println!("Use it as the lower layer of a local-overlay store (mount the overlay first):");
    println!(
        "  mount -t overlay overlay -o lowerdir={},upperdir={},workdir={} /nix/store",
        lower.display(),
        dir.join("upper").display(),
        dir.join("work").display()
    );
    println!("  nix.conf: extra-experimental-features = local-overlay-store");
    println!("  nix.conf: store = {}", lower_url.render());
}
