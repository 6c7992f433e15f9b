//! The bench's command line: the sizes, loads and daemons of the default
//! comparison, and one flag per other mode (at most one mode runs; see
//! `run` in main.rs). Help texts are the user's documentation: keep them
//! in step with the modes.

use clap::Parser;
use std::path::PathBuf;

#[derive(Parser, Clone)]
#[command(
    name = "snix-lower-store-bench",
    about = "snix-lower-store vs Nix's own daemon on the same generated lower store"
)]
pub(crate) struct Args {
    /// Paths in the generated lower store (the default run; also the -qR closure).
    #[arg(long, default_value_t = 22001)]
    pub(crate) paths: usize,
    /// Concurrent client connections of the load phases.
    #[arg(long, default_value_t = 16)]
    pub(crate) connections: usize,
    /// Duration of each load phase.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) seconds: f64,
    /// Reference graph: children per node in the tree.
    #[arg(long, default_value_t = 4)]
    pub(crate) fanout: usize,
    /// Reference graph: extra pseudo-random references per node (to higher nodes).
    #[arg(long, default_value_t = 2)]
    pub(crate) extra_refs: usize,
    /// Op mix of the mixed load, as weights.
    #[arg(long, default_value = "qpi=50,valid=20,batch=10,referrers=10,nar=10")]
    pub(crate) mix: String,
    /// Paths per QueryValidPaths request.
    #[arg(long, default_value_t = 32)]
    pub(crate) batch: usize,
    /// Sequential connections for connect-to-first-answer.
    #[arg(long, default_value_t = 300)]
    pub(crate) connects: usize,
    /// Sequential requests for the one-connection latency and the floor.
    #[arg(long, default_value_t = 20000)]
    pub(crate) sequential: usize,
    /// Timed `nix-store -qR` runs per daemon (after one warm-up).
    #[arg(long, default_value_t = 5)]
    pub(crate) qr_runs: usize,
    /// Daemons to measure: ours, nix, or both.
    #[arg(long, default_value = "ours,nix")]
    pub(crate) daemons: String,
    /// Worker threads of our daemon's tokio runtime (TOKIO_WORKER_THREADS;
    /// default: one per CPU).
    #[arg(long)]
    pub(crate) ours_threads: Option<usize>,
    /// Skip the local-overlay `nix-store -qR` measurement.
    #[arg(long)]
    pub(crate) skip_qr: bool,
    /// Mode: time importing N registration entries, ours vs `nix-store --load-db`.
    #[arg(long, value_name = "N")]
    pub(crate) import_only: Option<usize>,
    /// Mode: index N paths (tiny files), serve the mixed load, report peak RSS.
    #[arg(long, value_name = "N")]
    pub(crate) rss: Option<usize>,
    /// Mode: NarFromPath of one object of this many bytes (e.g. 1073741824).
    #[arg(long, value_name = "BYTES")]
    pub(crate) nar_bytes: Option<u64>,
    /// Mode: instructions (perf stat, user and kernel) per QueryPathInfo and
    /// per connection, from runs of 1 and N+1 requests: load-independent.
    #[arg(long, value_name = "N")]
    pub(crate) instructions: Option<usize>,
    /// Mode: time from "lower mounted" to the first answered QueryPathInfo
    /// for N paths: our import then serve, our daemon on the image's own
    /// index (directory, and erofs where possible), Nix's load-db then
    /// nix-daemon; then each index's size per path.
    #[arg(long, value_name = "N")]
    pub(crate) startup: Option<usize>,
    /// Starts of each way in the start-up mode.
    #[arg(long, default_value_t = 5)]
    pub(crate) startup_runs: usize,
    /// Starts of Nix's way in the start-up mode (default: --startup-runs;
    /// `--load-db` of 1M entries takes minutes).
    #[arg(long)]
    pub(crate) startup_nix_runs: Option<usize>,
    /// Start-up mode: which ways to time (a: import then serve, b: the
    /// image's index in the directory, erofs: mounted erofs image, c: Nix).
    #[arg(long, default_value = "a,b,erofs,c")]
    pub(crate) startup_ways: String,
    /// Start-up mode: `serve --image-check` modes to time the image ways
    /// (b, erofs) with, each in every round (sample, full).
    #[arg(long, default_value = "sample")]
    pub(crate) startup_image_checks: String,
    /// Start-up mode: skip the erofs image (make, mount).
    #[arg(long)]
    pub(crate) skip_erofs: bool,
    /// Mode: size of the generated store of N paths as a directory, erofs
    /// and squashfs images.
    #[arg(long, value_name = "N")]
    pub(crate) image_sizes: Option<usize>,
    /// `--rss`: serve the image's own index (built into the generated
    /// store, opened immutable) instead of a state-dir import.
    #[arg(long)]
    pub(crate) image_index: bool,
    /// Debian suite whose Nix is the baseline (trixie: 2.26, sid: 2.34).
    #[arg(long, default_value = "sid")]
    pub(crate) suite: String,
    #[arg(long, default_value = "/var/cache/snix-lower-store/rootfs")]
    pub(crate) rootfs_cache: PathBuf,
    /// Work directory (generated stores are kept there and reused).
    #[arg(long, default_value = "/var/tmp/snix-lower-store-bench")]
    pub(crate) work: PathBuf,
    /// The snix-lower-store binary (default: next to this one).
    #[arg(long)]
    pub(crate) daemon: Option<PathBuf>,
}
