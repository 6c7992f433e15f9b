//! The `snix-lower-store` command line: serve, import, verify, list, info,
//! store-url, reconcile and demo. Every flag can also be set as `SNIX_LOWER_STORE_<FLAG>`.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use snix_lower_store::overlay_url::OverlayUrl;
use snix_lower_store::progress;
use snix_lower_store::server::ops::LowerStore;
use snix_lower_store::server::{self, Server};
use snix_lower_store::systemd;
use snix_lower_store_index::image;
use snix_lower_store_index::import::{self, ImportOptions};
use snix_lower_store_index::PathInfoIndex;
use snix_lower_store_protocol::wire::Limits;
use snix_lower_store_types::ca_proof::CaProofOptions;
use snix_lower_store_types::lower::LowerDir;
use snix_lower_store_types::path_info::{join_sigs, PathInfo};
use snix_lower_store_types::StoreDir;

#[derive(Parser)]
#[command(
    name = "snix-lower-store",
    version,
    about = "Read-only nix-daemon serving a shared store as the lower layer of Nix's local-overlay store"
)]
struct Cli {
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, global = true, env = "SNIX_LOWER_STORE_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Where logs go: journald, stderr, or auto (journald when stderr is the journal).
    #[arg(
        long,
        global = true,
        env = "SNIX_LOWER_STORE_LOG_TARGET",
        value_enum,
        default_value = "auto"
    )]
    log_target: LogTarget,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogTarget {
    Auto,
    Stderr,
    Journald,
}

#[derive(Args, Clone)]
struct StoreArgs {
    /// Directory holding the index (index.sqlite).
    #[arg(
        long,
        env = "SNIX_LOWER_STORE_STATE_DIR",
        default_value = "/var/lib/snix-lower-store"
    )]
    state_dir: PathBuf,
    /// Logical store directory the paths are named under.
    #[arg(long, env = "SNIX_LOWER_STORE_STORE_DIR", default_value = "/nix/store")]
    store_dir: String,
}

// Parsed once at start and moved into its subcommand's function: the size
// difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Serve the worker protocol on a unix socket.
    Serve(ServeArgs),
    /// Add path infos to the index, all or nothing.
    Import(ImportArgs),
    /// Write a self-contained, read-only index into a lower dir (an image
    /// being built), which `serve` then opens from the image itself.
    BuildIndex(BuildIndexArgs),
    /// Check every indexed path against the lower dir; non-zero exit on any problem.
    Verify(VerifyArgs),
    /// List indexed paths.
    List(ListArgs),
    /// Show one path's info.
    Info(InfoArgs),
    /// Print the local-overlay:// store URL using our socket as the lower store.
    StoreUrl(StoreUrlArgs),
    /// After the lower changed: make Nix's upper database agree with it
    /// (exit 0 settled, 1 refused, 2 error).
    Reconcile(ReconcileArgs),
    /// Make a small lower store, index it, serve it and print how Nix uses it.
    Demo(DemoArgs),
}

// The structs below are the flags of one subcommand each. Their own comments
// are plain comments: a doc comment on an `Args` struct would become help text.

// `serve`: where to listen, what to serve from, and the connection limits.
#[derive(Args)]
struct ServeArgs {
    /// Socket path to bind (a stale socket file is replaced). Leave it out
    /// under socket activation: the sockets systemd passes are used.
    #[arg(long, env = "SNIX_LOWER_STORE_LISTEN")]
    listen: Option<PathBuf>,
    /// Mode of the bound socket (octal).
    #[arg(long, env = "SNIX_LOWER_STORE_SOCKET_MODE", default_value = "0666")]
    socket_mode: String,
    /// Group owning the bound socket.
    #[arg(long, env = "SNIX_LOWER_STORE_SOCKET_GROUP")]
    socket_group: Option<String>,
    /// Exit after this long with no open connection (socket activation
    /// starts the daemon again on the next client). Examples: 30s, 10m.
    #[arg(long, env = "SNIX_LOWER_STORE_IDLE_EXIT_AFTER", value_parser = systemd::parse_duration)]
    idle_exit_after: Option<Duration>,
    /// On SIGTERM, how long requests being answered may take to finish.
    #[arg(long, env = "SNIX_LOWER_STORE_SHUTDOWN_TIMEOUT", value_parser = systemd::parse_duration, default_value = "10s")]
    shutdown_timeout: Duration,
    /// Physical directory holding the store objects (the overlay's lowerdir).
    #[arg(long, env = "SNIX_LOWER_STORE_LOWER_DIR")]
    lower_dir: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
    /// An image's own index (written by `build-index`), opened read-only and
    /// checked against --lower-dir. Without it the index is, in this order:
    /// the state dir's index.sqlite if it exists (an explicit or default
    /// --state-dir keeps working as before); else, for a lower dir
    /// <root>/nix/store (the store dir), the image's own
    /// <root>/.snix-lower-store/index if it exists; else a new empty
    /// index.sqlite in the state dir.
    #[arg(long, env = "SNIX_LOWER_STORE_INDEX", conflicts_with = "path_info_service")]
    index: Option<PathBuf>,
    /// How an image's own index is checked against --lower-dir at start:
    /// `sample` (the image id in <root>/.snix-lower-store/id must equal
    /// the index's, then 1024 indexed paths must exist with a kind and length
    /// that fit their NAR size; cost independent of the store's size) or
    /// `full` (as `sample`, plus one listing of the whole lower dir whose count
    /// of store paths must equal the count at build time). An index built
    /// without an id is always checked by the listing.
    #[arg(long, env = "SNIX_LOWER_STORE_IMAGE_CHECK", value_enum, default_value_t = image::ImageCheck::Sample)]
    image_check: image::ImageCheck,
    /// Users (and @groups, or *) reported as trusted in the handshake.
    #[arg(
        long,
        env = "SNIX_LOWER_STORE_TRUSTED_USERS",
        value_delimiter = ',',
        default_value = "root"
    )]
    trusted_users: Vec<String>,
    /// Read path infos from a snix PathInfoService instead of the embedded
    /// index: grpc+unix:///run/snix/store.sock, grpc+http://host:port, grpc+https://host:port.
    #[arg(long, env = "SNIX_LOWER_STORE_PATH_INFO_SERVICE")]
    path_info_service: Option<String>,
    /// Also serve our path infos as snix.store.v1.PathInfoService (plus gRPC
    /// health) on unix:///path or host:port.
    #[arg(long, env = "SNIX_LOWER_STORE_GRPC_LISTEN")]
    grpc_listen: Option<String>,
    /// How --grpc-listen writes a deriver's name: with-drv (as snix-store
    /// copy stores it; right for snix's nix-daemon) or without-drv (as the
    /// proto comment says; right for nar-bridge).
    #[arg(
        long,
        env = "SNIX_LOWER_STORE_GRPC_DERIVER_NAME",
        value_enum,
        default_value = "with-drv"
    )]
    grpc_deriver_name: snix_lower_store::grpc::convert::DeriverName,
    /// With --path-info-service: content addresses proven for path infos
    /// that come without one, as `import` does.
    #[command(flatten)]
    ca_proof: CaProofArgs,
    /// Deadline of each call to the PathInfoService (List gets 60 times it).
    #[arg(long, env = "SNIX_LOWER_STORE_GRPC_TIMEOUT", value_parser = systemd::parse_duration, default_value = "5s")]
    grpc_timeout: Duration,
    /// How often the List snapshot (referrers, derivers) is rebuilt.
    #[arg(long, env = "SNIX_LOWER_STORE_REFRESH_INTERVAL", value_parser = systemd::parse_duration, default_value = "60s")]
    refresh_interval: Duration,
    /// Connections served at once; more are told to retry later.
    #[arg(long, env = "SNIX_LOWER_STORE_MAX_CONNECTIONS", default_value_t = 4096)]
    max_connections: u64,
    /// Close connections idle this long (e.g. 1h). Off by default: Nix keeps
    /// pooled connections to its lower store open and only notices a closed
    /// one when its next request fails.
    #[arg(long, env = "SNIX_LOWER_STORE_IDLE_TIMEOUT", value_parser = systemd::parse_duration)]
    idle_timeout: Option<Duration>,
    /// Close connections that have not finished the handshake by then.
    #[arg(long, env = "SNIX_LOWER_STORE_HANDSHAKE_TIMEOUT", value_parser = systemd::parse_duration, default_value = "30s")]
    handshake_timeout: Duration,
    /// Longest string a request may carry, in bytes.
    #[arg(long, env = "SNIX_LOWER_STORE_MAX_STRING", default_value_t = 1 << 20)]
    max_string: u64,
    /// Most entries a list in a request may carry.
    #[arg(long, env = "SNIX_LOWER_STORE_MAX_LIST", default_value_t = 1 << 20)]
    max_list: u64,
    /// Answer every lookup from the index file: no in-memory key directory
    /// (which takes about 21 bytes of memory per path, 21 MB at 1M paths,
    /// and keeps the cost of a lookup from growing with the store).
    #[arg(long, env = "SNIX_LOWER_STORE_NO_KEY_DIRECTORY")]
    no_key_directory: bool,
}

// `import`: one source and where to index it.
#[derive(Args)]
struct ImportArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Physical directory holding the store objects.
    #[arg(long, env = "SNIX_LOWER_STORE_LOWER_DIR")]
    lower_dir: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
    /// Show no progress (a bar on a terminal, a line every 2 s otherwise).
    /// Under systemd (NOTIFY_SOCKET set) the unit's STATUS= still tells it.
    #[arg(long, short)]
    quiet: bool,
}

// What `import` and `build-index` read and how they check it: one source (the
// group "source": at most one may be given) and the checks.
#[derive(Args)]
struct SourceArgs {
    /// Registration file (`nix-store --dump-db`, closureInfo's `registration`), or - for stdin.
    #[arg(long, env = "SNIX_LOWER_STORE_REGISTRATION", group = "source")]
    registration: Option<String>,
    /// Output of `nix path-info --json` (Nix 2.26, or 2.34 --json-format 1 or 2), or - for stdin.
    #[arg(long, env = "SNIX_LOWER_STORE_PATH_INFO_JSON", group = "source")]
    path_info_json: Option<String>,
    /// A Nix store database (…/nix/var/nix/db/db.sqlite), opened read-only; its
    /// realisations of content-addressed derivation outputs are imported too.
    #[arg(long, env = "SNIX_LOWER_STORE_NIX_DB", group = "source")]
    nix_db: Option<PathBuf>,
    /// Re-hash each new path's NAR from the lower dir.
    #[arg(long, env = "SNIX_LOWER_STORE_CHECK_CONTENT")]
    check_content: bool,
    #[command(flatten)]
    ca_proof: CaProofArgs,
}

// Content addresses proven where a path info has none: at import and
// build-index (a registration has none), and in `serve` for path infos from
// a PathInfoService (snix-store copy drops them).
#[derive(Args)]
struct CaProofArgs {
    /// Derive no content address: entries keep the `ca` they come with (a
    /// registration has none). By default a `ca` is recorded for an entry
    /// without one when its store path proves it: `fixed:r:sha256` from the
    /// NAR hash, `text:sha256` and `fixed:sha256` from the file's contents.
    #[arg(long, env = "SNIX_LOWER_STORE_NO_CA_PROOF")]
    no_ca_proof: bool,
    /// Largest regular file read to prove a `text:sha256` or `fixed:sha256`
    /// content address (0: read no file, prove only from NAR hashes).
    #[arg(long, env = "SNIX_LOWER_STORE_CA_PROOF_MAX_FILE_SIZE", value_name = "BYTES",
          default_value_t = snix_lower_store_types::ca_proof::DEFAULT_MAX_FILE_SIZE)]
    ca_proof_max_file_size: u64,
}

impl CaProofArgs {
    fn options(&self) -> CaProofOptions {
        if self.no_ca_proof {
            CaProofOptions::OFF
        } else {
            CaProofOptions {
                from_nar_hash: true,
                max_file_size: self.ca_proof_max_file_size,
            }
        }
    }
}

// `build-index`: a source, the lower dir it describes, and where to write
// the image's own index.
#[derive(Args)]
struct BuildIndexArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Physical directory holding the store objects; must be writable unless
    /// --output points elsewhere.
    #[arg(long, env = "SNIX_LOWER_STORE_LOWER_DIR")]
    lower_dir: PathBuf,
    /// Logical store directory the paths are named under.
    #[arg(long, env = "SNIX_LOWER_STORE_STORE_DIR", default_value = "/nix/store")]
    store_dir: String,
    /// Where to write the index [default: <root>/.snix-lower-store/index for a
    /// lower dir <root>/nix/store (the store dir), where `serve` finds it].
    #[arg(long)]
    output: Option<PathBuf>,
    /// The image id written into the index and <root>/.snix-lower-store/id
    /// (32 hex digits) instead of a random one, so that the same inputs give
    /// the same image (as a Nix build must). Derive it from what makes the
    /// image, e.g. the registration's sha256; images that differ must not
    /// share an id. With SOURCE_DATE_EPOCH set, entries without a
    /// registration time get that time, not the build's.
    #[arg(long, value_parser = image::parse_image_id)]
    image_id: Option<String>,
    /// Show no progress (a bar on a terminal, a line every 2 s otherwise).
    /// Under systemd (NOTIFY_SOCKET set) the unit's STATUS= still tells it.
    #[arg(long, short)]
    quiet: bool,
}

// `verify`: the index and the lower dir to check it against.
#[derive(Args)]
struct VerifyArgs {
    #[arg(long, env = "SNIX_LOWER_STORE_LOWER_DIR")]
    lower_dir: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
    /// Re-hash every NAR.
    #[arg(long, env = "SNIX_LOWER_STORE_CHECK_CONTENT")]
    check_content: bool,
    /// Show no progress (a bar on a terminal, a line every 2 s otherwise).
    /// Under systemd (NOTIFY_SOCKET set) the unit's STATUS= still tells it.
    #[arg(long, short)]
    quiet: bool,
}

// `list`: the index to list.
#[derive(Args)]
struct ListArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[arg(long)]
    json: bool,
}

// `info`: one path and the index to look it up in.
#[derive(Args)]
struct InfoArgs {
    /// Full store path.
    path: String,
    #[command(flatten)]
    store: StoreArgs,
    #[arg(long)]
    json: bool,
}

// `store-url`: the parts of the local-overlay:// URL.
#[derive(Args)]
struct StoreUrlArgs {
    #[arg(long, env = "SNIX_LOWER_STORE_SOCKET")]
    socket: PathBuf,
    /// The overlay's lowerdir (checked by Nix's check-mount).
    #[arg(long, env = "SNIX_LOWER_STORE_LOWER_DIR")]
    lower_dir: PathBuf,
    /// The overlay's upperdir.
    #[arg(long, env = "SNIX_LOWER_STORE_UPPER_LAYER")]
    upper_layer: PathBuf,
    /// State directory of the upper store (Nix's `state`).
    #[arg(long, env = "SNIX_LOWER_STORE_OVERLAY_STATE")]
    state: Option<PathBuf>,
    /// Root of the merged store (Nix's `root`), if not /.
    #[arg(long, env = "SNIX_LOWER_STORE_OVERLAY_ROOT")]
    root: Option<PathBuf>,
}

// `reconcile`: the overlay store, the Nix to act through, what to do with
// broken paths, and the new lower's index (chosen as `serve` chooses it).
#[derive(Args)]
struct ReconcileArgs {
    /// The local-overlay:// store URL Nix uses (its state= and upper-layer=
    /// name the upper database <state>/db/db.sqlite and the upper layer;
    /// without state=, <root>/nix/var/nix or Nix's NIX_STATE_DIR or
    /// /nix/var/nix, as Nix defaults it).
    #[arg(long, env = "SNIX_LOWER_STORE_STORE_URL")]
    store_url: String,
    /// The nix-store binary that deletes through Nix.
    #[arg(long, env = "SNIX_LOWER_STORE_NIX_STORE", default_value = "nix-store")]
    nix_store: PathBuf,
    /// Upper paths whose closure lost a lower path: `invalidate` deletes them
    /// (and their referrers) through Nix, to be rebuilt or substituted;
    /// `refuse` changes nothing and exits 1, naming them.
    #[arg(long, env = "SNIX_LOWER_STORE_ON_BROKEN", value_enum)]
    on_broken: snix_lower_store::reconcile::OnBroken,
    /// Records the lower last settled; when it still matches, exit 0 at once.
    /// Written atomically, only after success.
    #[arg(long, env = "SNIX_LOWER_STORE_SETTLED_FILE")]
    settled_file: Option<PathBuf>,
    /// The new lower's image index, as for `serve` (see `serve --help`).
    #[arg(long, env = "SNIX_LOWER_STORE_INDEX")]
    index: Option<PathBuf>,
    /// The new lower dir [default: the real= of the URL's lower-store].
    #[arg(long, env = "SNIX_LOWER_STORE_LOWER_DIR")]
    lower_dir: Option<PathBuf>,
    #[command(flatten)]
    store: StoreArgs,
    /// How an image's own index is checked against the lower dir (as `serve`).
    #[arg(long, env = "SNIX_LOWER_STORE_IMAGE_CHECK", value_enum, default_value_t = image::ImageCheck::Sample)]
    image_check: image::ImageCheck,
}

// `demo`: where to put it, and whether to check and exit.
#[derive(Args)]
struct DemoArgs {
    /// Where to put the demo store, index and socket.
    #[arg(
        long,
        env = "SNIX_LOWER_STORE_DEMO_DIR",
        default_value = "/tmp/snix-lower-store-demo"
    )]
    dir: PathBuf,
    /// Query every demo path through the socket, print the result and exit.
    #[arg(long)]
    check: bool,
}

fn init_logging(level: &str, target: LogTarget) {
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

fn read_input(src: &str) -> Result<String> {
    if src == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("reading stdin")?;
        Ok(s)
    } else {
        std::fs::read_to_string(src).with_context(|| format!("reading {src}"))
    }
}

fn store_dir(s: &str) -> Result<StoreDir> {
    StoreDir::new(s).map_err(anyhow::Error::msg)
}

fn chmod_chgrp(path: &Path, mode: &str, group: Option<&str>) -> Result<()> {
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
fn raise_fd_limit(max_connections: u64) {
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

fn bind(listen: &Path) -> Result<tokio::net::UnixListener> {
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

/// An embedded index as a served backend, with the in-memory key directory
/// unless `--no-key-directory`.
fn served_index(index: PathInfoIndex, key_directory: bool) -> Arc<dyn snix_lower_store::backend::Backend> {
    if key_directory {
        index.start_key_directory();
    }
    snix_lower_store::backend::index(index)
}

fn open_store(lower_dir: &Path, store: &StoreArgs, create: bool, key_directory: bool) -> Result<LowerStore> {
    let sd = store_dir(&store.store_dir)?;
    let lower = LowerDir::open(lower_dir).map_err(anyhow::Error::msg)?;
    let index = if create {
        std::fs::create_dir_all(&store.state_dir)
            .with_context(|| format!("creating state dir {}", store.state_dir.display()))?;
        PathInfoIndex::open_or_create(&store.state_dir, sd.as_str())?
    } else {
        PathInfoIndex::open(&store.state_dir, sd.as_str())?
    };
    Ok(LowerStore {
        backend: served_index(index, key_directory),
        lower,
        store_dir: sd,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_level, cli.log_target);
    snix_lower_store::panics::install();
    let cmd = match cli.cmd {
        Cmd::Reconcile(args) => return reconcile(args),
        other => other,
    };
    match run(cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("snix-lower-store: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Serve(args) => serve(args),
        Cmd::Import(args) => import_cmd(args),
        Cmd::BuildIndex(args) => build_index(args),
        Cmd::Verify(args) => verify(args),
        Cmd::List(args) => list(args),
        Cmd::Info(args) => info(args),
        Cmd::StoreUrl(args) => store_url(args),
        Cmd::Reconcile(args) => Ok(reconcile(args)),
        Cmd::Demo(args) => demo(&args.dir, args.check),
    }
}

/// `reconcile`: exit 0 settled, 1 refused (the message on stderr), 2 error.
fn reconcile(args: ReconcileArgs) -> ExitCode {
    use snix_lower_store::reconcile::{self, Outcome};
    let res = (|| {
        let index = reconcile_index(&args)?;
        reconcile::run(&reconcile::Options {
            store_url: &args.store_url,
            nix_store: &args.nix_store,
            on_broken: args.on_broken,
            settled_file: args.settled_file.as_deref(),
            index: &index,
        })
    })();
    match res {
        Ok(Outcome::Settled(line)) => {
            tracing::info!("{line}");
            println!("{line}");
            ExitCode::SUCCESS
        }
        Ok(Outcome::Refused(msg)) => {
            tracing::error!("{msg}");
            eprintln!("{msg}");
            ExitCode::from(1)
        }
        Err(e) => {
            tracing::error!("reconcile failed: {e:#}");
            eprintln!("snix-lower-store: reconcile: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The new lower's index, chosen as `serve` chooses it, but never created:
/// an empty index would make every lower copy look lost.
fn reconcile_index(args: &ReconcileArgs) -> Result<PathInfoIndex> {
    let url = snix_lower_store::overlay_url::Parsed::parse(&args.store_url)
        .map_err(|e| anyhow::anyhow!("reconcile --store-url: {e}"))?;
    if url.store_dir != args.store.store_dir {
        bail!(
            "reconcile: the store URL's store dir {} differs from --store-dir {}",
            url.store_dir,
            args.store.store_dir
        );
    }
    let lower_dir = match (&args.lower_dir, &url.lower_real) {
        (Some(d), _) | (None, Some(d)) => d.clone(),
        (None, None) => bail!("reconcile: the store URL's lower-store has no real=: give --lower-dir"),
    };
    let in_image = image::default_location(&lower_dir, &args.store.store_dir).filter(|f| f.exists());
    let state_index = args.store.state_dir.join("index.sqlite");
    let file = match (&args.index, in_image) {
        (Some(f), _) => f.clone(),
        (None, Some(f)) if !state_index.exists() => f,
        (None, _) if state_index.exists() => {
            return Ok(PathInfoIndex::open(&args.store.state_dir, &args.store.store_dir)?)
        }
        (None, _) => bail!(
            "reconcile: no index of the new lower: neither {} nor an image index under {}; give --index or \
             --state-dir (a reconcile against an empty index would drop every lower path)",
            state_index.display(),
            lower_dir.display()
        ),
    };
    let lower = LowerDir::open(&lower_dir).map_err(anyhow::Error::msg)?;
    image::open_checked(&file, &args.store.store_dir, &lower, args.image_check).context("reconcile")
}

/// `serve`: checks where to listen, then serves until SIGTERM, Ctrl-C or
/// `--idle-exit-after`, and finishes the requests in flight.
fn serve(args: ServeArgs) -> Result<ExitCode> {
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
async fn serve_store(args: &ServeArgs) -> Result<LowerStore> {
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
fn serve_index(args: &ServeArgs) -> Result<LowerStore> {
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
fn spawn_grpc_server(server: Arc<Server>, addr: String, deriver_name: snix_lower_store::grpc::convert::DeriverName) {
    tokio::spawn(async move {
        if let Err(e) = snix_lower_store::server::grpc::serve_with(server, &addr, deriver_name).await {
            tracing::error!(error = %e, "gRPC server stopped");
        }
    });
}

/// The sockets to accept on: `--listen` (bound, chmod and chgrp'ed), or the
/// ones systemd passed; and how to name them in the start log line.
fn listeners(
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
async fn serve_until_stopped(
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

/// The entries (and the Nix database's realisations) of the one source given.
fn read_source(src: &SourceArgs, sd: &StoreDir) -> Result<(Vec<PathInfo>, Vec<import::NewRealisation>)> {
    if let Some(f) = &src.registration {
        Ok((import::parse_registration(&read_input(f)?, sd, f)?, Vec::new()))
    } else if let Some(f) = &src.path_info_json {
        Ok((import::parse_path_info_json(&read_input(f)?, sd, f)?, Vec::new()))
    } else if let Some(db) = &src.nix_db {
        let realisations = import::read_nix_db_realisations(db, sd)?;
        Ok((import::read_nix_db(db, sd)?, realisations))
    } else {
        bail!("give one of --registration, --path-info-json or --nix-db");
    }
}

/// The checks `--check-content` and the content-address proof flags ask for.
fn import_options(src: &SourceArgs) -> ImportOptions {
    ImportOptions {
        check_content: src.check_content,
        ca_proof: src.ca_proof.options(),
    }
}

/// `import`: parses the one source given, then imports it (and the Nix
/// database's realisations) in one transaction.
fn import_cmd(args: ImportArgs) -> Result<ExitCode> {
    let sd = store_dir(&args.store.store_dir)?;
    let lower = LowerDir::open(&args.lower_dir).map_err(anyhow::Error::msg)?;
    let progress = progress::for_command("import", args.quiet);
    progress.phase("reading the source", None);
    let (batch, realisations) = read_source(&args.source, &sd).context("import")?;
    let state_dir = &args.store.state_dir;
    std::fs::create_dir_all(state_dir).with_context(|| format!("creating state dir {}", state_dir.display()))?;
    let n = batch.len();
    let nr = realisations.len();
    let opts = import_options(&args.source);
    let report = import::import_reporting(state_dir, &sd, &lower, batch, realisations, opts, &progress)?;
    let summary = format!(
        "imported {n} entries: {} added, {} already indexed",
        report.added, report.unchanged
    );
    progress.finish(Some(&summary));
    println!("{summary}");
    if nr > 0 {
        println!("imported {nr} realisations of content-addressed derivation outputs");
    }
    Ok(ExitCode::SUCCESS)
}

/// `build-index`: validates the source as `import` does and writes the
/// image's own index (complete, or not at all).
fn build_index(args: BuildIndexArgs) -> Result<ExitCode> {
    let sd = store_dir(&args.store_dir)?;
    let lower = LowerDir::open(&args.lower_dir).map_err(anyhow::Error::msg)?;
    let progress = progress::for_command("build-index", args.quiet);
    progress.phase("reading the source", None);
    let (batch, realisations) = read_source(&args.source, &sd).context("build-index")?;
    let output = match args.output {
        Some(o) => o,
        None => image::default_location(&args.lower_dir, &args.store_dir).with_context(|| {
            format!(
                "build-index: --lower-dir {} does not end in the store dir {}, so it has no image root for the \
                 index: lay the image out as <root>{} (the lower dir) with the index going to \
                 <root>/.snix-lower-store, outside the store dir, where a local-overlay store never shows it; \
                 or give --output",
                args.lower_dir.display(),
                args.store_dir,
                args.store_dir
            )
        })?,
    };
    let batch = with_source_date_epoch(batch)?;
    let opts = image::BuildOptions {
        import: import_options(&args.source),
        image_id: args.image_id,
        progress: progress.clone(),
    };
    let report = image::build(&output, &sd, &lower, batch, realisations, opts)?;
    let summary = format!(
        "wrote {}: {} paths indexed, {} store paths in {}",
        output.display(),
        report.paths,
        report.lower_entries,
        args.lower_dir.display()
    );
    progress.finish(Some(&summary));
    println!("{summary}");
    Ok(ExitCode::SUCCESS)
}

/// Reproducible builds: with `SOURCE_DATE_EPOCH` set (as nixpkgs' stdenv
/// sets it), entries without a registration time (a registration has none)
/// get that time instead of the time of the build.
fn with_source_date_epoch(mut batch: Vec<PathInfo>) -> Result<Vec<PathInfo>> {
    let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") else {
        return Ok(batch);
    };
    let t: u64 = v
        .trim()
        .parse()
        .with_context(|| format!("build-index: SOURCE_DATE_EPOCH={v:?} is not a number of seconds"))?;
    for e in batch.iter_mut().filter(|e| e.registration_time == 0) {
        e.registration_time = t;
    }
    Ok(batch)
}

/// `verify`: prints each problem on stdout and a summary on stderr; fails
/// when there is any problem.
fn verify(args: VerifyArgs) -> Result<ExitCode> {
    let sd = store_dir(&args.store.store_dir)?;
    let lower = LowerDir::open(&args.lower_dir).map_err(anyhow::Error::msg)?;
    let index = PathInfoIndex::open(&args.store.state_dir, sd.as_str())?;
    let progress = progress::for_command("verify", args.quiet);
    progress.phase("reading the index", None);
    let entries = index.all_hashes()?;
    let problems = snix_lower_store::verify::verify_reporting(&entries, &lower, &sd, args.check_content, &progress);
    progress.finish(Some(&format!("{} problem(s)", problems.len())));
    for p in &problems {
        println!("{p}");
    }
    let n = index.count()?;
    if problems.is_empty() {
        eprintln!(
            "verified {n} paths{}: no problems",
            if args.check_content { " with their contents" } else { "" }
        );
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("verified {n} paths: {} problem(s)", problems.len());
        Ok(ExitCode::FAILURE)
    }
}

/// `list`: every indexed path, one a line or as a JSON array.
fn list(args: ListArgs) -> Result<ExitCode> {
    let sd = store_dir(&args.store.store_dir)?;
    let index = PathInfoIndex::open(&args.store.state_dir, sd.as_str())?;
    let all: Vec<String> = index.all_paths()?.iter().map(|p| sd.display(p)).collect();
    if args.json {
        println!("{}", serde_json::to_string(&all)?);
    } else {
        for p in all {
            println!("{p}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `info`: one path's info, as text or JSON (`nix path-info --json`'s names).
fn info(args: InfoArgs) -> Result<ExitCode> {
    let InfoArgs { path, store, json } = args;
    let sd = store_dir(&store.store_dir)?;
    let index = PathInfoIndex::open(&store.state_dir, sd.as_str())?;
    let p = sd.parse(&path)?;
    let Some(info) = index.path_info(&p)? else {
        bail!("info: {path} is not in the index {}", index.db_path().display());
    };
    let refs: Vec<String> = info.references.iter().map(|r| sd.display(r)).collect();
    let deriver = info.deriver.as_ref().map(|d| sd.display(d));
    if json {
        let v = serde_json::json!({
            "path": path,
            "narHash": info.nar_hash.to_sri(),
            "narSize": info.nar_size,
            "references": refs,
            "deriver": deriver,
            "registrationTime": info.registration_time,
            "ultimate": info.ultimate,
            "signatures": info.sigs.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            "ca": info.ca.as_ref().map(|c| c.render()),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("path:              {path}");
        println!("nar hash:          {}", info.nar_hash.to_sri());
        println!("nar size:          {}", info.nar_size);
        println!("deriver:           {}", deriver.unwrap_or_default());
        println!("registration time: {}", info.registration_time);
        println!("signatures:        {}", join_sigs(&info.sigs));
        println!("ca:                {}", info.ca.map(|c| c.render()).unwrap_or_default());
        println!("references:");
        for r in refs {
            println!("  {r}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `store-url`: prints the local-overlay:// URL.
fn store_url(args: StoreUrlArgs) -> Result<ExitCode> {
    let url = OverlayUrl {
        socket: &args.socket,
        lower_dir: &args.lower_dir,
        upper_layer: &args.upper_layer,
        state: args.state.as_deref(),
        root: args.root.as_deref(),
    };
    if url.nested_needs_encoding() {
        eprintln!(
            "store-url: note: the socket path or lower dir holds characters that are percent-encoded; \
             Nix 2.34 opens this URL, Nix 2.26 decodes lower-store= twice and does not. \
             Paths of letters, digits, '-', '.', '_', '~' and '/' work with every Nix."
        );
    }
    println!("{}", url.render());
    Ok(ExitCode::SUCCESS)
}

/// `demo`: generates and indexes a small lower store in `dir`, serves it,
/// queries it once and prints how Nix uses it; then serves until Ctrl-C, or
/// exits with `check`.
fn demo(dir: &Path, check: bool) -> Result<ExitCode> {
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
fn demo_store(dir: &Path, sd: &StoreDir, lower: &Path, state: &Path) -> Result<Vec<PathInfo>> {
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
async fn demo_query(socket: &Path, sd: &StoreDir, entries: &[PathInfo]) -> Result<String> {
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
fn demo_usage(dir: &Path, socket: &Path, lower: &Path, top: &str) {
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
