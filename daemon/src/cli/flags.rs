//! The command line's definitions: the clap structs of every subcommand and
//! their flags, nothing that runs. Doc comments here are the `--help` texts
//! (keep them and the docs saying the same); plain `//` comments are not.
//! Every flag can also be set as `SNIX_LOWER_STORE_<FLAG>`.
//!
//! Invariant: what a flag means is decided here (names, defaults, value
//! parsers, conflicts); what is done with it is in `commands/`.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

use snix_lower_store::systemd;
use snix_lower_store_index::image;

#[derive(Parser)]
#[command(
    name = "snix-lower-store",
    version,
    about = "Read-only nix-daemon serving a shared store as the lower layer of Nix's local-overlay store"
)]
pub(crate) struct Cli {
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, global = true, env = "SNIX_LOWER_STORE_LOG_LEVEL", default_value = "info")]
    pub(crate) log_level: String,
    /// Where logs go: journald, stderr, or auto (journald when stderr is the journal).
    #[arg(
        long,
        global = true,
        env = "SNIX_LOWER_STORE_LOG_TARGET",
        value_enum,
        default_value = "auto"
    )]
    pub(crate) log_target: LogTarget,
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum LogTarget {
    Auto,
    Stderr,
    Journald,
}

#[derive(Args, Clone)]
pub(crate) struct StoreArgs {
    /// Directory holding the index (index.sqlite).
    #[arg(
        long,
        env = "SNIX_LOWER_STORE_STATE_DIR",
        default_value = "/var/lib/snix-lower-store"
    )]
    pub(crate) state_dir: PathBuf,
    /// Logical store directory the paths are named under.
    #[arg(long, env = "SNIX_LOWER_STORE_STORE_DIR", default_value = "/nix/store")]
    pub(crate) store_dir: String,
}

// Parsed once at start and moved into its subcommand's function: the size
// difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub(crate) enum Cmd {
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
pub(crate) struct ServeArgs {
    /// Socket path to bind (a stale socket file is replaced). Leave it out
    /// under socket activation: the sockets systemd passes are used.
    #[arg(long, env = "SNIX_LOWER_STORE_LISTEN")]
    pub(crate) listen: Option<PathBuf>,
    /// Mode of the bound socket (octal).
    #[arg(long, env = "SNIX_LOWER_STORE_SOCKET_MODE", default_value = "0666")]
    pub(crate) socket_mode: String,
    /// Group owning the bound socket.
    #[arg(long, env = "SNIX_LOWER_STORE_SOCKET_GROUP")]
    pub(crate) socket_group: Option<String>,
    /// Exit after this long with no open connection (socket activation
    /// starts the daemon again on the next client). Examples: 30s, 10m.
    #[arg(long, env = "SNIX_LOWER_STORE_IDLE_EXIT_AFTER", value_parser = systemd::parse_duration)]
    pub(crate) idle_exit_after: Option<Duration>,
    /// On SIGTERM, how long requests being answered may take to finish.
    #[arg(long, env = "SNIX_LOWER_STORE_SHUTDOWN_TIMEOUT", value_parser = systemd::parse_duration, default_value = "10s")]
    pub(crate) shutdown_timeout: Duration,
    /// Physical directory holding the store objects (the overlay's lowerdir).
    #[arg(long, env = "SNIX_LOWER_STORE_LOWER_DIR")]
    pub(crate) lower_dir: PathBuf,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    /// An image's own index (written by `build-index`), opened read-only and
    /// checked against --lower-dir. Without it the index is, in this order:
    /// the state dir's index.sqlite if it exists (an explicit or default
    /// --state-dir keeps working as before); else, for a lower dir
    /// <root>/nix/store (the store dir), the image's own
    /// <root>/.snix-lower-store/index if it exists; else a new empty
    /// index.sqlite in the state dir.
    #[arg(long, env = "SNIX_LOWER_STORE_INDEX", conflicts_with = "path_info_service")]
    pub(crate) index: Option<PathBuf>,
    /// How an image's own index is checked against --lower-dir at start:
    /// `sample` (the image id in <root>/.snix-lower-store/id must equal
    /// the index's, then 1024 indexed paths must exist with a kind and length
    /// that fit their NAR size; cost independent of the store's size) or
    /// `full` (as `sample`, plus one listing of the whole lower dir whose count
    /// of store paths must equal the count at build time). An index built
    /// without an id is always checked by the listing.
    #[arg(long, env = "SNIX_LOWER_STORE_IMAGE_CHECK", value_enum, default_value_t = image::ImageCheck::Sample)]
    pub(crate) image_check: image::ImageCheck,
    /// Users (and @groups, or *) reported as trusted in the handshake.
    #[arg(
        long,
        env = "SNIX_LOWER_STORE_TRUSTED_USERS",
        value_delimiter = ',',
        default_value = "root"
    )]
    pub(crate) trusted_users: Vec<String>,
    /// Read path infos from a snix PathInfoService instead of the embedded
    /// index: grpc+unix:///run/snix/store.sock, grpc+http://host:port, grpc+https://host:port.
    #[arg(long, env = "SNIX_LOWER_STORE_PATH_INFO_SERVICE")]
    pub(crate) path_info_service: Option<String>,
    /// Also serve our path infos as snix.store.v1.PathInfoService (plus gRPC
    /// health) on unix:///path or host:port.
    #[arg(long, env = "SNIX_LOWER_STORE_GRPC_LISTEN")]
    pub(crate) grpc_listen: Option<String>,
    /// How --grpc-listen writes a deriver's name: with-drv (as snix-store
    /// copy stores it; right for snix's nix-daemon) or without-drv (as the
    /// proto comment says; right for nar-bridge).
    #[arg(
        long,
        env = "SNIX_LOWER_STORE_GRPC_DERIVER_NAME",
        value_enum,
        default_value = "with-drv"
    )]
    pub(crate) grpc_deriver_name: snix_lower_store::grpc::convert::DeriverName,
    /// With --path-info-service: content addresses proven for path infos
    /// that come without one, as `import` does.
    #[command(flatten)]
    pub(crate) ca_proof: CaProofArgs,
    /// Deadline of each call to the PathInfoService (List gets 60 times it).
    #[arg(long, env = "SNIX_LOWER_STORE_GRPC_TIMEOUT", value_parser = systemd::parse_duration, default_value = "5s")]
    pub(crate) grpc_timeout: Duration,
    /// How often the List snapshot (referrers, derivers) is rebuilt.
    #[arg(long, env = "SNIX_LOWER_STORE_REFRESH_INTERVAL", value_parser = systemd::parse_duration, default_value = "60s")]
    pub(crate) refresh_interval: Duration,
    /// Connections served at once; more are told to retry later.
    #[arg(long, env = "SNIX_LOWER_STORE_MAX_CONNECTIONS", default_value_t = 4096)]
    pub(crate) max_connections: u64,
    /// Close connections idle this long (e.g. 1h). Off by default: Nix keeps
    /// pooled connections to its lower store open and only notices a closed
    /// one when its next request fails.
    #[arg(long, env = "SNIX_LOWER_STORE_IDLE_TIMEOUT", value_parser = systemd::parse_duration)]
    pub(crate) idle_timeout: Option<Duration>,
    /// Close connections that have not finished the handshake by then.
    #[arg(long, env = "SNIX_LOWER_STORE_HANDSHAKE_TIMEOUT", value_parser = systemd::parse_duration, default_value = "30s")]
    pub(crate) handshake_timeout: Duration,
    /// Longest string a request may carry, in bytes.
    #[arg(long, env = "SNIX_LOWER_STORE_MAX_STRING", default_value_t = 1 << 20)]
    pub(crate) max_string: u64,
    /// Most entries a list in a request may carry.
    #[arg(long, env = "SNIX_LOWER_STORE_MAX_LIST", default_value_t = 1 << 20)]
    pub(crate) max_list: u64,
    /// Answer every lookup from the index file: no in-memory key directory
    /// (which takes about 21 bytes of memory per path, 21 MB at 1M paths,
    /// and keeps the cost of a lookup from growing with the store).
    #[arg(long, env = "SNIX_LOWER_STORE_NO_KEY_DIRECTORY")]
    pub(crate) no_key_directory: bool,
}

// `import`: one source and where to index it.
#[derive(Args)]
pub(crate) struct ImportArgs {
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    /// Physical directory holding the store objects.
    #[arg(long, env = "SNIX_LOWER_STORE_LOWER_DIR")]
    pub(crate) lower_dir: PathBuf,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    /// Show no progress (a bar on a terminal, a line every 2 s otherwise).
    /// Under systemd (NOTIFY_SOCKET set) the unit's STATUS= still tells it.
    #[arg(long, short)]
    pub(crate) quiet: bool,
}

// What `import` and `build-index` read and how they check it: one source (the
// group "source": at most one may be given) and the checks.
#[derive(Args)]
pub(crate) struct SourceArgs {
    /// Registration file (`nix-store --dump-db`, closureInfo's `registration`), or - for stdin.
    #[arg(long, env = "SNIX_LOWER_STORE_REGISTRATION", group = "source")]
    pub(crate) registration: Option<String>,
    /// Output of `nix path-info --json` (Nix 2.26, or 2.34 --json-format 1 or 2), or - for stdin.
    #[arg(long, env = "SNIX_LOWER_STORE_PATH_INFO_JSON", group = "source")]
    pub(crate) path_info_json: Option<String>,
    /// A Nix store database (…/nix/var/nix/db/db.sqlite), opened read-only; its
    /// realisations of content-addressed derivation outputs are imported too.
    #[arg(long, env = "SNIX_LOWER_STORE_NIX_DB", group = "source")]
    pub(crate) nix_db: Option<PathBuf>,
    /// Re-hash each new path's NAR from the lower dir.
    #[arg(long, env = "SNIX_LOWER_STORE_CHECK_CONTENT")]
    pub(crate) check_content: bool,
    #[command(flatten)]
    pub(crate) ca_proof: CaProofArgs,
}

// Content addresses proven where a path info has none: at import and
// build-index (a registration has none), and in `serve` for path infos from
// a PathInfoService (snix-store copy drops them).
#[derive(Args)]
pub(crate) struct CaProofArgs {
    /// Derive no content address: entries keep the `ca` they come with (a
    /// registration has none). By default a `ca` is recorded for an entry
    /// without one when its store path proves it: `fixed:r:sha256` from the
    /// NAR hash, `text:sha256` and `fixed:sha256` from the file's contents.
    #[arg(long, env = "SNIX_LOWER_STORE_NO_CA_PROOF")]
    pub(crate) no_ca_proof: bool,
    /// Largest regular file read to prove a `text:sha256` or `fixed:sha256`
    /// content address (0: read no file, prove only from NAR hashes).
    #[arg(long, env = "SNIX_LOWER_STORE_CA_PROOF_MAX_FILE_SIZE", value_name = "BYTES",
          default_value_t = snix_lower_store_types::ca_proof::DEFAULT_MAX_FILE_SIZE)]
    pub(crate) ca_proof_max_file_size: u64,
}

// `build-index`: a source, the lower dir it describes, and where to write
// the image's own index.
#[derive(Args)]
pub(crate) struct BuildIndexArgs {
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    /// Physical directory holding the store objects; must be writable unless
    /// --output points elsewhere.
    #[arg(long, env = "SNIX_LOWER_STORE_LOWER_DIR")]
    pub(crate) lower_dir: PathBuf,
    /// Logical store directory the paths are named under.
    #[arg(long, env = "SNIX_LOWER_STORE_STORE_DIR", default_value = "/nix/store")]
    pub(crate) store_dir: String,
    /// Where to write the index [default: <root>/.snix-lower-store/index for a
    /// lower dir <root>/nix/store (the store dir), where `serve` finds it].
    #[arg(long)]
    pub(crate) output: Option<PathBuf>,
    /// The image id written into the index and <root>/.snix-lower-store/id
    /// (32 hex digits) instead of a random one, so that the same inputs give
    /// the same image (as a Nix build must). Derive it from what makes the
    /// image, e.g. the registration's sha256; images that differ must not
    /// share an id. With SOURCE_DATE_EPOCH set, entries without a
    /// registration time get that time, not the build's.
    #[arg(long, value_parser = image::parse_image_id)]
    pub(crate) image_id: Option<String>,
    /// Show no progress (a bar on a terminal, a line every 2 s otherwise).
    /// Under systemd (NOTIFY_SOCKET set) the unit's STATUS= still tells it.
    #[arg(long, short)]
    pub(crate) quiet: bool,
}

// `verify`: the index and the lower dir to check it against.
#[derive(Args)]
pub(crate) struct VerifyArgs {
    #[arg(long, env = "SNIX_LOWER_STORE_LOWER_DIR")]
    pub(crate) lower_dir: PathBuf,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    /// Re-hash every NAR.
    #[arg(long, env = "SNIX_LOWER_STORE_CHECK_CONTENT")]
    pub(crate) check_content: bool,
    /// Show no progress (a bar on a terminal, a line every 2 s otherwise).
    /// Under systemd (NOTIFY_SOCKET set) the unit's STATUS= still tells it.
    #[arg(long, short)]
    pub(crate) quiet: bool,
}

// `list`: the index to list.
#[derive(Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    #[arg(long)]
    pub(crate) json: bool,
}

// `info`: one path and the index to look it up in.
#[derive(Args)]
pub(crate) struct InfoArgs {
    /// Full store path.
    pub(crate) path: String,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    #[arg(long)]
    pub(crate) json: bool,
}

// `store-url`: the parts of the local-overlay:// URL.
#[derive(Args)]
pub(crate) struct StoreUrlArgs {
    #[arg(long, env = "SNIX_LOWER_STORE_SOCKET")]
    pub(crate) socket: PathBuf,
    /// The overlay's lowerdir (checked by Nix's check-mount).
    #[arg(long, env = "SNIX_LOWER_STORE_LOWER_DIR")]
    pub(crate) lower_dir: PathBuf,
    /// The overlay's upperdir.
    #[arg(long, env = "SNIX_LOWER_STORE_UPPER_LAYER")]
    pub(crate) upper_layer: PathBuf,
    /// State directory of the upper store (Nix's `state`).
    #[arg(long, env = "SNIX_LOWER_STORE_OVERLAY_STATE")]
    pub(crate) state: Option<PathBuf>,
    /// Root of the merged store (Nix's `root`), if not /.
    #[arg(long, env = "SNIX_LOWER_STORE_OVERLAY_ROOT")]
    pub(crate) root: Option<PathBuf>,
}

// `reconcile`: the overlay store, the Nix to act through, what to do with
// broken paths, and the new lower's index (chosen as `serve` chooses it).
#[derive(Args)]
pub(crate) struct ReconcileArgs {
    /// The local-overlay:// store URL Nix uses (its state= and upper-layer=
    /// name the upper database <state>/db/db.sqlite and the upper layer;
    /// without state=, <root>/nix/var/nix or Nix's NIX_STATE_DIR or
    /// /nix/var/nix, as Nix defaults it).
    #[arg(long, env = "SNIX_LOWER_STORE_STORE_URL")]
    pub(crate) store_url: String,
    /// The nix-store binary that deletes through Nix.
    #[arg(long, env = "SNIX_LOWER_STORE_NIX_STORE", default_value = "nix-store")]
    pub(crate) nix_store: PathBuf,
    /// Upper paths whose closure lost a lower path: `invalidate` deletes them
    /// (and their referrers) through Nix, to be rebuilt or substituted;
    /// `refuse` changes nothing and exits 1, naming them.
    #[arg(long, env = "SNIX_LOWER_STORE_ON_BROKEN", value_enum)]
    pub(crate) on_broken: snix_lower_store::reconcile::OnBroken,
    /// Records the lower last settled; when it still matches, exit 0 at once.
    /// Written atomically, only after success.
    #[arg(long, env = "SNIX_LOWER_STORE_SETTLED_FILE")]
    pub(crate) settled_file: Option<PathBuf>,
    /// The new lower's image index, as for `serve` (see `serve --help`).
    #[arg(long, env = "SNIX_LOWER_STORE_INDEX")]
    pub(crate) index: Option<PathBuf>,
    /// The new lower dir [default: the real= of the URL's lower-store].
    #[arg(long, env = "SNIX_LOWER_STORE_LOWER_DIR")]
    pub(crate) lower_dir: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    /// How an image's own index is checked against the lower dir (as `serve`).
    #[arg(long, env = "SNIX_LOWER_STORE_IMAGE_CHECK", value_enum, default_value_t = image::ImageCheck::Sample)]
    pub(crate) image_check: image::ImageCheck,
}

// `demo`: where to put it, and whether to check and exit.
#[derive(Args)]
pub(crate) struct DemoArgs {
    /// Where to put the demo store, index and socket.
    #[arg(
        long,
        env = "SNIX_LOWER_STORE_DEMO_DIR",
        default_value = "/tmp/snix-lower-store-demo"
    )]
    pub(crate) dir: PathBuf,
    /// Query every demo path through the socket, print the result and exit.
    #[arg(long)]
    pub(crate) check: bool,
}
