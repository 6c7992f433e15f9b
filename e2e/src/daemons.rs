//! Lifecycle of the lower-store daemons the suite compares: ours
//! (`snix-lower-store serve` on its embedded index), ours in gRPC mode (a
//! `serve --grpc-listen` exposing the same index as snix's PathInfoService,
//! and in front of it a `serve --path-info-service grpc+unix://…` answering
//! every op from that service), ours serving an image made by
//! `scripts/mk-lower-image` (directory form or erofs, with the image's own
//! index, no import and no state dir), and Nix's own `nix-daemon` serving the
//! same lower store as a plain local store. All run inside a chroot, log to a
//! file under `/e2e/logs`, and are terminated when their handle is dropped.
//!
//! When one of ours is dropped, its log is searched for panic lines (the
//! daemon's panic hook starts each with `PANIC_MARKER`; Rust's default
//! message says "panicked at"); `panic_lines` lists them and the run fails
//! if there are any.

use crate::ctx::Ctx;
use crate::rootfs::{tail, Output, Rootfs};
use anyhow::{bail, Context, Result};
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What snix-lower-store's panic hook starts every line with
/// (`snix_lower_store::panics::PANIC_MARKER`; a daemon unit test checks they match).
pub const PANIC_MARKER: &str = "SNIX-LOWER-STORE-PANIC";

/// Panic lines found in our daemons' logs, each prefixed with the log's path.
static PANIC_LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Every panic line our daemons logged so far (the run fails on any).
pub fn panic_lines() -> Vec<String> {
    PANIC_LINES.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

fn collect_panics(log: &std::path::Path) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut found = PANIC_LINES.lock().unwrap_or_else(|e| e.into_inner());
    for l in text
        .lines()
        .filter(|l| l.contains(PANIC_MARKER) || l.contains("panicked at"))
    {
        let l = format!("{}: {l}", log.display());
        // A log is appended to by each restart on the same socket: report once.
        if !found.contains(&l) {
            found.push(l);
        }
    }
}

/// Which implementation serves the lower store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ours,
    /// Our daemon as a gRPC client of our gRPC server (same index).
    OursGrpc,
    /// Our daemon on the directory form of an image (its own index).
    OursImage,
    /// Our daemon on the erofs form of the same image, loop-mounted read-only.
    OursErofs,
    /// Our daemon as a gRPC client of a real `snix-store daemon` filled by
    /// `snix-store copy` (only when snix binaries are given). Also the kind
    /// of the snix processes themselves (their logs are searched for panics).
    OursSnix,
    Nix,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ours => "ours",
            Kind::OursGrpc => "ours-grpc",
            Kind::OursImage => "ours-image",
            Kind::OursErofs => "ours-erofs",
            Kind::OursSnix => "ours-snix",
            Kind::Nix => "nix-daemon",
        }
    }

    /// Every flavour of our daemon, in the order the scenarios run them.
    pub const OURS: [Kind; 4] = [Kind::Ours, Kind::OursGrpc, Kind::OursImage, Kind::OursErofs];

    /// Every flavour of our daemon to run: [`Kind::OURS`], and
    /// [`Kind::OursSnix`] when real snix binaries are given.
    pub fn ours(snix: bool) -> Vec<Kind> {
        let mut v = Kind::OURS.to_vec();
        if snix {
            v.push(Kind::OursSnix);
        }
        v
    }

    /// Whether path infos come through snix's PathInfoService schema (no
    /// `registrationTime`, no `ultimate`, no realisations).
    pub fn grpc(self) -> bool {
        matches!(self, Kind::OursGrpc | Kind::OursSnix)
    }

    /// Whether this flavour serves an image (no import, no state dir).
    pub fn image(self) -> bool {
        matches!(self, Kind::OursImage | Kind::OursErofs)
    }

    /// Short name used in scenario groups (`overlay-<short>/…`) and directories.
    pub fn short(self) -> &'static str {
        match self {
            Kind::Ours => "ours",
            Kind::OursGrpc => "ours-grpc",
            Kind::OursImage => "ours-image",
            Kind::OursErofs => "ours-erofs",
            Kind::OursSnix => "ours-snix",
            Kind::Nix => "nix",
        }
    }
}

/// A running daemon; killed on drop.
pub struct Daemon {
    pub kind: Kind,
    /// Socket path inside the chroot.
    pub socket: String,
    /// Physical store directory the daemon serves (inside the chroot).
    pub real: String,
    log: std::path::PathBuf,
    socket_host: std::path::PathBuf,
    child: Child,
    /// Extra sockets to remove after the process is gone (the gRPC socket).
    extra_sockets: Vec<std::path::PathBuf>,
    /// In gRPC mode: the gRPC server this daemon reads from (stopped after it).
    pub backend: Option<Box<Daemon>>,
}

impl Daemon {
    /// `unix://` URL a client uses to talk to this daemon, with the store's
    /// physical directory so the client reads files from the lower store.
    pub fn url(&self) -> String {
        format!("unix://{}?real={}", self.socket, self.real)
    }

    /// The last lines the daemon logged, for error messages.
    pub fn log_tail(&self) -> String {
        let mine = tail(&std::fs::read_to_string(&self.log).unwrap_or_default(), 1500);
        match &self.backend {
            Some(b) => format!("{mine} || gRPC server log: {}", b.log_tail()),
            None => mine,
        }
    }

    /// Everything the daemon (not its gRPC server) logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: libc::c_int) {
        if let Some(sig) = rustix::process::Signal::from_named_raw(sig) {
            let _ = rustix::process::kill_process(rustix::process::Pid::from_child(&self.child), sig);
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops the daemon now (also done on drop).
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // The gRPC client first, then (field drop) its server.
        self.terminate();
        if self.kind != Kind::Nix {
            collect_panics(&self.log);
        }
        let _ = std::fs::remove_file(&self.socket_host);
        for s in &self.extra_sockets {
            let _ = std::fs::remove_file(s);
        }
    }
}

fn spawn(ctx: &Ctx, kind: Kind, socket: &str, real: &str, mut cmd: std::process::Command) -> Result<Daemon> {
    let sock_host = ctx.host(socket);
    let _ = std::fs::remove_file(&sock_host);
    if let Some(p) = sock_host.parent() {
        std::fs::create_dir_all(p)?;
    }
    std::fs::create_dir_all(ctx.work.join("logs"))?;
    let name = socket.trim_start_matches('/').replace('/', "_");
    let log = ctx.work.join("logs").join(format!("{name}.log"));
    let logf = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
    let desc = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(logf.try_clone()?)
        .stderr(logf)
        .spawn()
        .with_context(|| format!("cannot start {}: {desc}", kind.name()))?;
    let mut d = Daemon {
        kind,
        socket: socket.to_string(),
        real: real.to_string(),
        log,
        socket_host: sock_host.clone(),
        child,
        extra_sockets: vec![],
        backend: None,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Ready when a connection is accepted, not merely when the file exists.
        if sock_host.exists() && std::os::unix::net::UnixStream::connect(&sock_host).is_ok() {
            return Ok(d);
        }
        if let Ok(Some(status)) = d.child.try_wait() {
            bail!(
                "{} exited ({status}) before creating {socket}: {}",
                kind.name(),
                d.log_tail()
            );
        }
        if Instant::now() > deadline {
            let t = d.log_tail();
            d.terminate();
            bail!("{} did not create {socket} within 20s: {t}", kind.name());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Log filter of every `serve` the suite starts: info, and the per-request
/// debug lines of the connection handler.
const REQUEST_LOG_LEVEL: &str = "info,snix_lower_store::server=debug";

/// Starts `serve` on an image made by `scripts/mk-lower-image` (`lower`:
/// the image's lower dir, `<root>/nix/store` of its directory or of where it
/// is mounted): no import, and a state dir that does not exist, so the
/// daemon must find and open the image's own index
/// (`<root>/.snix-lower-store/index`). The image itself was registered for
/// the read-only check when made ([`crate::images::make`]); `no_state` is
/// registered as a path that must stay absent.
pub fn start_ours_image(
    ctx: &Ctx,
    fs: &Rootfs,
    kind: Kind,
    socket: &str,
    lower: &str,
    no_state: &str,
) -> Result<Daemon> {
    let bin = ctx
        .ours
        .as_deref()
        .context("snix-lower-store binary is not available")?;
    ctx.readonly.borrow_mut().must_stay_absent(&ctx.host(no_state));
    let args = [
        bin,
        "serve",
        "--listen",
        socket,
        "--lower-dir",
        lower,
        "--store-dir",
        crate::images::STORE_DIR,
        "--state-dir",
        no_state,
        "--trusted-users",
        "root",
        "--log-level",
        REQUEST_LOG_LEVEL,
    ];
    spawn(ctx, kind, socket, lower, fs.command(&args))
}

/// Starts `snix-lower-store serve` for an already imported state directory;
/// returns once the socket accepts connections.
pub fn start_ours(ctx: &Ctx, fs: &Rootfs, socket: &str, lower_store_dir: &str, state_dir: &str) -> Result<Daemon> {
    start_serve(ctx, fs, socket, lower_store_dir, Some(state_dir), &[])
}

/// `serve` with the common flags plus `extra`; registers what it serves for
/// the read-only check first (`state_dir` is None when it reads a gRPC
/// PathInfoService instead of the index).
fn start_serve(
    ctx: &Ctx,
    fs: &Rootfs,
    socket: &str,
    lower_store_dir: &str,
    state_dir: Option<&str>,
    extra: &[&str],
) -> Result<Daemon> {
    let bin = ctx
        .ours
        .as_deref()
        .context("snix-lower-store binary is not available")?;
    ctx.readonly
        .borrow_mut()
        .serving(&ctx.host(lower_store_dir), state_dir.map(|s| ctx.host(s)).as_deref());
    let mut args = vec![
        bin,
        "serve",
        "--listen",
        socket,
        "--lower-dir",
        lower_store_dir,
        "--store-dir",
        "/nix/store",
        "--trusted-users",
        "root",
        // One `request` line per answered op (op and store path), which the
        // parity scenarios read to prove which ops a client really sent.
        "--log-level",
        REQUEST_LOG_LEVEL,
    ];
    if let Some(s) = state_dir {
        args.extend(["--state-dir", s]);
    }
    args.extend_from_slice(extra);
    let kind = if state_dir.is_some() {
        Kind::Ours
    } else {
        Kind::OursGrpc
    };
    spawn(ctx, kind, socket, lower_store_dir, fs.command(&args))
}

/// gRPC socket of the server paired with the client on `socket`.
pub fn grpc_socket(socket: &str) -> String {
    format!("{socket}.grpc")
}

/// Starts our gRPC server: `serve --grpc-listen unix://…` on the index in
/// `state_dir` (its worker-protocol socket is `{socket}.srv`, unused by the
/// scenarios); returns once both of its sockets accept connections.
pub fn start_grpc_server(
    ctx: &Ctx,
    fs: &Rootfs,
    socket: &str,
    lower_store_dir: &str,
    state_dir: &str,
) -> Result<Daemon> {
    start_grpc_server_with(ctx, fs, socket, lower_store_dir, state_dir, &[])
}

/// [`start_grpc_server`] with `extra` flags (e.g. `--grpc-deriver-name`).
pub fn start_grpc_server_with(
    ctx: &Ctx,
    fs: &Rootfs,
    socket: &str,
    lower_store_dir: &str,
    state_dir: &str,
    extra: &[&str],
) -> Result<Daemon> {
    let grpc = grpc_socket(socket);
    let grpc_host = ctx.host(&grpc);
    let _ = std::fs::remove_file(&grpc_host);
    let listen = format!("unix://{grpc}");
    let mut d = start_serve(
        ctx,
        fs,
        &format!("{socket}.srv"),
        lower_store_dir,
        Some(state_dir),
        &[&["--grpc-listen", listen.as_str()][..], extra].concat(),
    )?;
    d.extra_sockets.push(grpc_host.clone());
    // The gRPC listener is bound by a task of its own: wait for it too.
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&grpc_host).is_err() {
        if Instant::now() > deadline {
            bail!("our gRPC server did not accept on {grpc} within 20s: {}", d.log_tail());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Ok(d)
}

/// Starts our daemon as a client of the gRPC server paired with `socket`
/// (`serve --path-info-service grpc+unix://{socket}.grpc`), files and NARs
/// from `lower_store_dir`.
pub fn start_grpc_client(ctx: &Ctx, fs: &Rootfs, socket: &str, lower_store_dir: &str, timeout: &str) -> Result<Daemon> {
    let service = format!("grpc+unix://{}", grpc_socket(socket));
    start_serve(
        ctx,
        fs,
        socket,
        lower_store_dir,
        None,
        &["--path-info-service", &service, "--grpc-timeout", timeout],
    )
}

/// Our daemon in gRPC mode: the gRPC server on the index in `state_dir` and,
/// listening on `socket`, the daemon reading from it. Dropping the handle
/// stops both (the client first).
pub fn start_ours_grpc(ctx: &Ctx, fs: &Rootfs, socket: &str, lower_store_dir: &str, state_dir: &str) -> Result<Daemon> {
    let server = start_grpc_server(ctx, fs, socket, lower_store_dir, state_dir)?;
    let mut client = match start_grpc_client(ctx, fs, socket, lower_store_dir, "5s") {
        Ok(c) => c,
        Err(e) => bail!("{e:#}; gRPC server log: {}", server.log_tail()),
    };
    client.backend = Some(Box::new(server));
    Ok(client)
}

fn snix_bins(ctx: &Ctx) -> Result<&crate::ctx::SnixBins> {
    ctx.snix
        .as_ref()
        .context("no snix binaries given (--snix-dir, or SNIX_STORE_BIN and SNIX_NIX_DAEMON_BIN)")
}

/// `snix-store copy`'s input from `nix path-info --json --closure-size`:
/// `{"closure": [ {path, …}, … ]}` (Nix ≥ 2.19 prints an object keyed by
/// path, older Nix a list; `copy` reads the list form).
pub fn snix_copy_input(path_info_json: &str) -> Result<String> {
    let v: serde_json::Value = serde_json::from_str(path_info_json).context("nix path-info --json printed no JSON")?;
    let list: Vec<serde_json::Value> = match v {
        serde_json::Value::Array(a) => a,
        serde_json::Value::Object(m) => m
            .into_iter()
            .map(|(path, mut info)| {
                info["path"] = path.into();
                info
            })
            .collect(),
        other => bail!("nix path-info --json printed neither a list nor an object: {other}"),
    };
    Ok(serde_json::json!({ "closure": list }).to_string())
}

/// A real `snix-store daemon` on a fresh database under `dir` (redb and
/// objectstore+file), listening on [`grpc_socket`]`(socket)`, filled with
/// `snix-store copy` from every valid path of the local store at
/// `lower_root`, the way a snix user would: `copy` ingests `/nix/store/<p>`
/// from the local disk, so it runs in a mount namespace of its own with the
/// lower store's objects bound on `/nix/store`.
pub fn start_snix_store(ctx: &Ctx, fs: &Rootfs, socket: &str, lower_root: &str, dir: &str) -> Result<Daemon> {
    let bins = snix_bins(ctx)?;
    std::fs::create_dir_all(ctx.host(dir))?;
    let grpc = grpc_socket(socket);
    let blobs = format!("objectstore+file://{dir}/blobs");
    let dirs = format!("redb://{dir}/directories.redb");
    let infos = format!("redb://{dir}/pathinfo.redb");
    let cmd = fs.command(&[
        bins.store.as_str(),
        "daemon",
        "-l",
        &grpc,
        "--blob-service-addr",
        &blobs,
        "--directory-service-addr",
        &dirs,
        "--path-info-service-addr",
        &infos,
    ]);
    let d = spawn(ctx, Kind::OursSnix, &grpc, &format!("{lower_root}/nix/store"), cmd)?;
    let url = format!("local?root={lower_root}");
    let json = fs.ok(&["nix", "path-info", "--json", "--closure-size", "--all", "--store", &url])?;
    let input = format!("{dir}/copy.json");
    std::fs::write(ctx.host(&input), snix_copy_input(&json)?)?;
    let service = format!("grpc+unix://{grpc}");
    let script = "mount -t tmpfs tmpfs /nix && mkdir /nix/store && mount --bind \"$1/nix/store\" /nix/store && \
                  exec \"$2\" copy --blob-service-addr \"$3\" --directory-service-addr \"$3\" \
                  --path-info-service-addr \"$3\" \"$4\"";
    let out = fs.run(&[
        // "unchanged": the chroot's root is no mount point, and every mount
        // of the suite's namespace is private already.
        "unshare",
        "--mount",
        "--propagation",
        "unchanged",
        "--",
        "/bin/sh",
        "-ec",
        script,
        "snix-copy",
        lower_root,
        &bins.store,
        &service,
        &input,
    ])?;
    if !out.success() {
        bail!("{}; snix-store log: {}", out.failure_text("failed"), d.log_tail());
    }
    Ok(d)
}

/// Our daemon in front of a real snix-store ([`start_snix_store`], under
/// `dir`) holding the lower store at `lower_root`: `serve
/// --path-info-service grpc+unix://…`, files and NARs from the lower dir.
/// Dropping the handle stops both (ours first).
pub fn start_ours_snix(ctx: &Ctx, fs: &Rootfs, socket: &str, lower_root: &str, dir: &str) -> Result<Daemon> {
    let server = start_snix_store(ctx, fs, socket, lower_root, dir)?;
    let mut client = match start_grpc_client(ctx, fs, socket, &format!("{lower_root}/nix/store"), "5s") {
        Ok(c) => c,
        Err(e) => bail!("{e:#}; snix-store log: {}", server.log_tail()),
    };
    client.kind = Kind::OursSnix;
    client.backend = Some(Box::new(server));
    Ok(client)
}

/// snix's own nix-daemon on `socket`, reading path infos from the gRPC
/// PathInfoService at `service` (`grpc+unix://…`); its blob and directory
/// services are in memory (the checks only query path infos).
pub fn start_snix_nix_daemon(ctx: &Ctx, fs: &Rootfs, socket: &str, service: &str) -> Result<Daemon> {
    let bins = snix_bins(ctx)?;
    let cmd = fs.command(&[
        bins.nix_daemon.as_str(),
        "-l",
        socket,
        "--blob-service-addr",
        "memory://",
        "--directory-service-addr",
        "memory://",
        "--path-info-service-addr",
        service,
    ]);
    spawn(ctx, Kind::OursSnix, socket, "/nix/store", cmd)
}

/// Starts Nix's own daemon serving the local store rooted at `lower_root`.
pub fn start_nix(ctx: &Ctx, fs: &Rootfs, socket: &str, lower_root: &str) -> Result<Daemon> {
    let mut cmd = fs.command(&["nix-daemon", "--store", &format!("local?root={lower_root}")]);
    cmd.env("NIX_DAEMON_SOCKET_PATH", socket);
    spawn(ctx, Kind::Nix, socket, &format!("{lower_root}/nix/store"), cmd)
}

/// Starts Nix's own daemon serving the local store given by `store_url`
/// (e.g. with `state=`/`real=` parameters), whose objects live in `real`.
pub fn start_nix_url(ctx: &Ctx, fs: &Rootfs, socket: &str, store_url: &str, real: &str) -> Result<Daemon> {
    let mut cmd = fs.command(&["nix-daemon", "--store", store_url]);
    cmd.env("NIX_DAEMON_SOCKET_PATH", socket);
    spawn(ctx, Kind::Nix, socket, real, cmd)
}

/// Runs `snix-lower-store <args>` inside the chroot.
pub fn ours_cli(ctx: &Ctx, fs: &Rootfs, args: &[&str]) -> Result<Output> {
    let bin = ctx
        .ours
        .as_deref()
        .context("snix-lower-store binary is not available")?;
    let mut all = vec![bin];
    all.extend_from_slice(args);
    fs.run(&all)
}

/// Dumps the registration of the local store at `lower_root` with this
/// chroot's Nix into `file` (inside the chroot).
pub fn dump_db(fs: &Rootfs, lower_root: &str, file: &str) -> Result<()> {
    let out = fs
        .run(&["nix-store", "--store", &format!("local?root={lower_root}"), "--dump-db"])?
        .ok()?;
    if out.stdout.is_empty() {
        bail!("`{}` printed nothing", out.desc);
    }
    std::fs::write(fs.host_path(file), &out.stdout)?;
    Ok(())
}

/// Imports the lower store at `lower_root` into a fresh state directory from
/// `nix-store --dump-db` output of this chroot's Nix.
pub fn import_registration(ctx: &Ctx, fs: &Rootfs, lower_root: &str, state_dir: &str) -> Result<()> {
    let reg = format!("{state_dir}.registration");
    dump_db(fs, lower_root, &reg)?;
    ours_cli(
        ctx,
        fs,
        &[
            "import",
            "--state-dir",
            state_dir,
            "--lower-dir",
            &format!("{lower_root}/nix/store"),
            "--store-dir",
            "/nix/store",
            "--registration",
            &reg,
        ],
    )?
    .ok()?;
    Ok(())
}

/// A lower store served by one daemon, able to pick up changes Nix made
/// directly to the lower store (ours re-imports into a new state directory
/// and restarts; Nix's daemon reads its database live; the image flavours
/// get a new image, since an image is never changed: see [`Lower::refresh`]).
pub struct Lower {
    pub kind: Kind,
    /// Root of the lower local store (inside the chroot); objects live in
    /// `{root}/nix/store`. For the image flavours this is the store Nix acts
    /// on directly and images are made of, not what the daemon serves.
    pub root: String,
    pub socket: String,
    generation: u32,
    pub daemon: Option<Daemon>,
    /// Image flavours: the image of `root`'s first state (shared, made once).
    base: Option<crate::images::Image>,
    /// Image flavours: the last image our daemon accepted, and the read-only
    /// mount on [`Lower::image_root`] (of that image or of a copy it refused).
    pub image: Option<crate::images::Image>,
    image_mount: Option<crate::mounts::Mounted>,
}

impl Lower {
    /// `base` is the image of `root`'s contents (image flavours only).
    pub fn start(
        ctx: &Ctx,
        fs: &Rootfs,
        kind: Kind,
        root: &str,
        socket: &str,
        base: Option<crate::images::Image>,
    ) -> Result<Lower> {
        if kind.image() != base.is_some() {
            bail!("{}: an image is given exactly to the image flavours", kind.name());
        }
        let mut l = Lower {
            kind,
            root: root.to_string(),
            socket: socket.to_string(),
            generation: 0,
            daemon: None,
            base,
            image: None,
            image_mount: None,
        };
        l.refresh(ctx, fs)?;
        Ok(l)
    }

    /// The lower dir: what the daemon serves and the overlay's lowerdir (for
    /// the image flavours, the store dir inside the mounted image root).
    pub fn store_dir(&self) -> String {
        if self.kind.image() {
            crate::images::lower_dir(&self.image_root())
        } else {
            format!("{}/nix/store", self.root)
        }
    }

    /// Image flavours: where the root of the image served now is mounted
    /// (its `.snix-lower-store` beside the lower dir's `nix/`).
    pub fn image_root(&self) -> String {
        format!("{}-image", self.root)
    }

    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("daemon running")
    }

    /// Makes the daemon serve the lower store's current contents. Image
    /// flavours: a new image of `root` (every valid path), mounted in place
    /// of the old one; the caller unmounts any overlay on top first.
    pub fn refresh(&mut self, ctx: &Ctx, fs: &Rootfs) -> Result<()> {
        match self.kind {
            Kind::Nix => {
                if self.daemon.is_none() {
                    self.daemon = Some(start_nix(ctx, fs, &self.socket, &self.root)?);
                }
            }
            Kind::Ours | Kind::OursGrpc => {
                // Both processes of the gRPC flavour stop here and start
                // again on the new index; only a changed lower store is
                // ever re-imported.
                self.next_generation(
                    ctx,
                    Some("the scenario changes this lower store copy with Nix directly (re-imported)"),
                );
                let state = format!("{}-state{}", self.root, self.generation);
                import_registration(ctx, fs, &self.root, &state)?;
                let start = if self.kind == Kind::Ours {
                    start_ours
                } else {
                    start_ours_grpc
                };
                self.daemon = Some(start(ctx, fs, &self.socket, &self.store_dir(), &state)?);
            }
            Kind::OursSnix => {
                // A fresh snix-store, filled from the lower store as it is now.
                self.next_generation(
                    ctx,
                    Some("the scenario changes this lower store copy with Nix directly (copied into a new snix-store)"),
                );
                let dir = format!("{}-snix{}", self.root, self.generation);
                self.daemon = Some(start_ours_snix(ctx, fs, &self.socket, &self.root, &dir)?);
            }
            Kind::OursImage | Kind::OursErofs => {
                // A new image is made of the changed store; the store copy
                // itself is never served, so nothing to mark.
                self.next_generation(ctx, None);
                let img = match (self.generation, &self.base) {
                    (1, Some(b)) => b.clone(),
                    _ => self.make_image(ctx, fs)?,
                };
                self.serve_image(ctx, fs, img)?;
            }
        }
        Ok(())
    }

    /// Stops our daemon (if running) and counts a new generation; from the
    /// second one on, the lower store copy was changed on purpose by the
    /// scenario (`changed`: why), which the read-only check must know.
    fn next_generation(&mut self, ctx: &Ctx, changed: Option<&str>) {
        if let Some(d) = self.daemon.take() {
            d.stop();
        }
        self.generation += 1;
        if let (true, Some(why)) = (self.generation > 1, changed) {
            ctx.readonly
                .borrow_mut()
                .changed_on_purpose(&ctx.host(&self.store_dir()), why);
        }
    }

    /// Image flavours: an image of every valid path of `root` now.
    fn make_image(&self, ctx: &Ctx, fs: &Rootfs) -> Result<crate::images::Image> {
        let url = format!("local?root={}", self.root);
        let all = fs.run(&["nix", "path-info", "--all", "--store", &url])?.ok()?.stdout();
        let roots: Vec<String> = all.lines().map(str::to_string).collect();
        let src = crate::images::Source {
            url: &url,
            store_dir: &format!("{}/nix/store", self.root),
            roots: &roots,
        };
        let out = format!("{}-image{}", self.root, self.generation);
        crate::images::make(
            ctx,
            fs,
            &src,
            &out,
            self.kind == Kind::OursErofs,
            crate::images::IndexFrom::PathInfo,
        )
    }

    /// Image flavours: stops the daemon, mounts `img` on the lower dir in
    /// place of the image mounted there, and starts the daemon on it (the
    /// caller unmounts any overlay on top first).
    pub fn serve_image(&mut self, ctx: &Ctx, fs: &Rootfs, img: crate::images::Image) -> Result<()> {
        if let Some(d) = self.daemon.take() {
            d.stop();
        }
        self.image_mount = None;
        self.image_mount = Some(crate::images::mount(fs, self.kind, &img, &self.image_root())?);
        let no_state = format!("{}-no-state", self.root);
        self.daemon = Some(start_ours_image(
            ctx,
            fs,
            self.kind,
            &self.socket,
            &self.store_dir(),
            &no_state,
        )?);
        // Only an image the daemon accepted counts as the one served.
        self.image = Some(img);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A daemon log with a hook line and one with Rust's default message are
    /// both found, once each; a clean log adds nothing.
    #[test]
    fn panic_lines_are_collected_once() {
        let dir = std::env::temp_dir().join(format!("e2e-panic-lines.{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (hook, default, clean) = (dir.join("a.log"), dir.join("b.log"), dir.join("c.log"));
        let line =
            format!("ERROR snix_lower_store::panics: {PANIC_MARKER} #1 while serving IsValidPath for client pid 7");
        std::fs::write(&hook, format!("INFO serving\n{line}\n")).unwrap();
        std::fs::write(&default, "thread 'tokio-runtime-worker' panicked at src/x.rs:1:2:\n").unwrap();
        std::fs::write(&clean, "INFO serving\nWARN connection ended with an error\n").unwrap();
        for log in [&hook, &hook, &default, &clean] {
            collect_panics(log);
        }
        let found = panic_lines();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(found.iter().filter(|l| l.ends_with(&line)).count(), 1, "{found:?}");
        assert_eq!(
            found.iter().filter(|l| l.contains("panicked at")).count(),
            1,
            "{found:?}"
        );
        assert!(!found.iter().any(|l| l.contains("c.log")), "{found:?}");
    }
}
