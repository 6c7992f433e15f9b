//! The whole request path: a client handshake, then any op stream, answered
//! by the daemon's own connection handler (`Server::connection`, as for a
//! socket-activated or accepted connection) over a socketpair, backed by a
//! real `LowerStore`: an index built by the registration importer over a
//! small lower dir (text objects with references, a `.drv`, a directory
//! tree with an executable and a symlink, one indexed object deleted
//! afterwards), made once per process in a temp dir.
//!
//! The index answers through its in-memory key directory (`serve`'s
//! default), built and in use before the first input; nothing is imported
//! while fuzzing, so every reader snapshot is the directory's.
//!
//! Input: byte 0 picks the protocol the client offers (1.19-1.40: too old,
//! every supported version, newer than ours); the rest is the op stream,
//! sent one request at a time as a real client does. The target splits it
//! into requests with the daemon's own decoder, so it knows which reply to
//! expect for each, and asserts:
//! - every reply decodes for the negotiated version (STDERR frames, the
//!   STDERR_ERROR layout before and after 1.26, then a body that parses for
//!   that op), every store path in it is valid, NARs hash to the index's
//!   NAR hash, and nothing is left over after the last reply;
//! - IsValidPath, QueryValidPaths, QueryReferences, QueryReferrers and
//!   QueryMissing answer exactly what the fixture's entries say (computed
//!   here from the entries the index was built from, not asked of the
//!   daemon), and answer with an error only for a request naming a path
//!   that does not parse (QueryReferences: or is not in the index);
//! - every error names the op it answers, and write ops are refused;
//! - a malformed request or unknown op gets one STDERR_ERROR and the
//!   connection ends; a request cut short gets no reply;
//! - nothing panics: a panic in the server task is re-raised here (libFuzzer
//!   also aborts on any panic through its hook), so it is a fuzz crash.
#![no_main]

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use snix_lower_store::server::ops::LowerStore;
use snix_lower_store::server::Server;
use snix_lower_store_index::import::{self, ImportOptions};
use snix_lower_store_index::PathInfoIndex;
use snix_lower_store_protocol::codec::{TrustedFlag, UnkeyedValidPathInfo, Wire};
use snix_lower_store_protocol::nar_skip::skip_nar;
use snix_lower_store_protocol::request::{read_request, AnyRequest, Op};
use snix_lower_store_protocol::wire::{Limits, ProtocolError, WireReader};
use snix_lower_store_protocol::ProtoVersion;
use snix_lower_store_testkit::client::{Client, ClientError};
use snix_lower_store_types::lower::LowerDir;
use snix_lower_store_types::nar::{nar_hash, HashingSink};
use snix_lower_store_types::path_info::PathInfo;
use snix_lower_store_types::{StoreDir, StorePath};

/// The daemon's default decoding limits, for the server and for splitting.
fn limits() -> Limits {
    Limits::default()
}

struct Fixture {
    rt: tokio::runtime::Runtime,
    server: Arc<Server>,
    sd: StoreDir,
    entries: Vec<PathInfo>,
}

impl Fixture {
    fn indexed(&self, p: &StorePath) -> Option<&PathInfo> {
        self.entries.iter().find(|e| &e.path == p)
    }

    /// A derivation's outputs as the fixture made them: every entry whose
    /// deriver it is, as output "out" (the demo's one-output `.drv`); `None`
    /// when the path is not indexed (an indexed non-derivation has none).
    fn outputs(&self, drv: &StorePath) -> Option<Vec<(&'static str, &StorePath)>> {
        self.indexed(drv)?;
        let made = self.entries.iter().filter(|e| e.deriver.as_ref() == Some(drv));
        Some(made.map(|e| ("out", &e.path)).collect())
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&v, ops)) = data.split_first() else { return };
    let minor = 19 + v % 22;
    let f = fixture();
    f.rt.block_on(run(f, minor, ops));
});

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| build_fixture().unwrap_or_else(|e| panic!("session fuzz fixture: {e}")))
}

/// A directory per process under the temp dir; those of dead processes are
/// removed first, so repeated runs do not pile up.
fn fixture_dir() -> std::io::Result<PathBuf> {
    let parent = std::env::temp_dir().join("snix-lower-store-fuzz-session");
    std::fs::create_dir_all(&parent)?;
    for e in std::fs::read_dir(&parent)?.flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !Path::new("/proc").join(&pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    let dir = parent.join(std::process::id().to_string());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn build_fixture() -> Result<Fixture, String> {
    // As in the daemon (Rust's runtime does this before `main`, which
    // libFuzzer replaces): a peer that hung up is EPIPE, not a signal.
    // SAFETY: setting a signal's disposition to SIG_IGN touches no Rust state.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let dir = fixture_dir().map_err(|e| format!("temp dir: {e}"))?;
    let (lower, state) = (dir.join("lower"), dir.join("state"));
    std::fs::create_dir_all(&state).map_err(|e| e.to_string())?;
    let sd = StoreDir::new("/nix/store")?;
    let mut entries = snix_lower_store_testkit::demo::generate(&lower, &sd, 2, 2).map_err(|e| e.to_string())?;
    let tree = tree_object(&lower, entries[0].path.clone()).map_err(|e| format!("tree object: {e}"))?;
    entries.push(tree);
    let gone = snix_lower_store_testkit::demo::add_text(&lower, &sd, "fuzz-gone", "deleted after import\n", &[])
        .map_err(|e| e.to_string())?;
    entries.push(gone.clone());
    let lower_dir = LowerDir::open(&lower)?;
    import::import(
        &state,
        &sd,
        &lower_dir,
        entries.clone(),
        ImportOptions {
            check_content: true,
            ..Default::default()
        },
    )
    .map_err(|e| format!("import: {e}"))?;
    // Indexed but absent: NarFromPath and VerifyStore report it.
    std::fs::remove_file(lower.join(gone.path.base_name())).map_err(|e| e.to_string())?;
    // As `serve` runs by default: point lookups through the key directory,
    // built and answering before the first input.
    let index = PathInfoIndex::open(&state, sd.as_str()).map_err(|e| e.to_string())?;
    index.start_key_directory();
    index
        .await_key_directory(std::time::Duration::from_secs(60))
        .map_err(|e| e.to_string())?;
    let store = LowerStore {
        backend: snix_lower_store::backend::index(index),
        lower: LowerDir::open(&lower)?,
        store_dir: sd.clone(),
    };
    let server = Arc::new(Server {
        store,
        trusted_users: vec!["root".into()],
        limits: limits(),
        conn_limits: Default::default(),
        daemon_version: snix_lower_store::daemon_version(),
        stats: Default::default(),
    });
    // Multi-threaded, as the daemon runs.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    Ok(Fixture {
        rt,
        server,
        sd,
        entries,
    })
}

/// A directory object: a file, an executable, a symlink and a subdirectory.
fn tree_object(lower: &Path, reference: StorePath) -> std::io::Result<PathInfo> {
    use std::os::unix::fs::PermissionsExt;
    let path = StorePath::from_base_name("0123456789abcdfghijklmnpqrsvwxyz-fuzz-tree").expect("valid");
    let root = lower.join(path.base_name());
    std::fs::create_dir_all(root.join("bin"))?;
    std::fs::create_dir_all(root.join("share/doc"))?;
    std::fs::write(root.join("bin/hello"), "#!/bin/sh\necho hello\n")?;
    std::fs::set_permissions(root.join("bin/hello"), std::fs::Permissions::from_mode(0o555))?;
    std::fs::write(root.join("share/doc/README"), "a tree\n")?;
    std::os::unix::fs::symlink("share/doc", root.join("doc"))?;
    let (nar_hash, nar_size) = nar_hash(&root)?;
    Ok(PathInfo {
        references: vec![reference],
        registration_time: 1_700_000_000,
        sigs: vec![snix_lower_store_types::path_info::Signature::parse("cache.example.org-1:c2lnbmF0dXJl").unwrap()],
        ..PathInfo::new(path, nar_hash, nar_size)
    })
}

async fn run(f: &'static Fixture, minor: u8, ops: &[u8]) {
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    // `connection` counts the close; `run` would have counted the open.
    f.server.stats.open_connections.fetch_add(1, Ordering::Relaxed);
    let server = tokio::spawn(f.server.clone().connection(theirs));
    let checked = talk(f, minor, ours, ops).await;
    // The client end is closed now, so the server task ends.
    if let Err(e) = server.await {
        match e.try_into_panic() {
            Ok(p) => std::panic::resume_unwind(p),
            Err(e) => panic!("server task did not finish: {e}"),
        }
    }
    if let Err(why) = checked {
        panic!("protocol 1.{minor}: {why}");
    }
}

/// What the server must send after the request that ends the stream.
enum End {
    /// Nothing more (clean end, or a request cut short).
    Nothing,
    /// One STDERR_ERROR, naming the op if known, then nothing.
    Error(Option<Op>),
}

async fn talk(f: &Fixture, minor: u8, s: UnixStream, ops: &[u8]) -> Result<(), String> {
    let mut c = match Client::over(s, minor).await {
        Ok(c) => c,
        Err(ClientError::Daemon(m)) if minor < 21 => {
            return match m.contains("older than the oldest supported") {
                true => Ok(()),
                false => Err(format!("refusing an old client: unexpected message {m:?}")),
            };
        }
        Err(e) => return Err(format!("handshake: {e}")),
    };
    check_handshake(&c, minor)?;
    let v = c.version;
    let mut cur = WireReader::new(Cursor::new(ops), limits()).with_version(v);
    loop {
        let start = cur.get_mut().position() as usize;
        let end = match cur.u64().await {
            Err(_) => End::Nothing,
            Ok(word) => match Op::from_u64(word) {
                None => End::Error(None),
                Some(op) => match read_request(&mut cur, op).await {
                    Ok(req) => {
                        let stop = cur.get_mut().position() as usize;
                        send(&mut c, &ops[start..stop]).await?;
                        check_reply(f, &mut c, &req)
                            .await
                            .map_err(|e| format!("{} (request bytes {start}..{stop}): {e}", op.name()))?;
                        continue;
                    }
                    Err(ProtocolError::Eof) => End::Nothing,
                    Err(_) => End::Error(Some(op)),
                },
            },
        };
        // The rest of the stream, then hang up.
        let _ = c.w.write_all(&ops[start..]).await;
        let _ = c.w.shutdown().await;
        if let End::Error(op) = end {
            expect_error(&mut c, op).await?;
        }
        return expect_end(&mut c).await;
    }
}

fn check_handshake(c: &Client, minor: u8) -> Result<(), String> {
    let want = ProtoVersion(minor.min(ProtoVersion::LATEST.0));
    if c.version != want {
        return Err(format!("negotiated {} for a client offering 1.{minor}", c.version));
    }
    if c.daemon_version.is_some() != want.at_least(33) {
        return Err(format!("daemon version sent: {:?}", c.daemon_version));
    }
    // The fuzzer runs as a trusted user (root, or the test's own uid).
    if want.at_least(35) && !matches!(c.trust, Some(TrustedFlag::Trusted | TrustedFlag::NotTrusted)) {
        return Err(format!("trust word {:?}", c.trust));
    }
    Ok(())
}

async fn send(c: &mut Client, bytes: &[u8]) -> Result<(), String> {
    c.w.write_all(bytes)
        .await
        .map_err(|e| format!("sending the request: {e}"))
}

async fn expect_error(c: &mut Client, op: Option<Op>) -> Result<(), String> {
    match c.stderr().await {
        Err(ClientError::Daemon(m)) => match op {
            Some(op) if !m.starts_with(op.name()) => Err(format!("error does not name {}: {m:?}", op.name())),
            None if !m.starts_with("unknown worker op") => Err(format!("unknown op answered with {m:?}")),
            _ => Ok(()),
        },
        Ok(()) => Err("a malformed request was answered with STDERR_LAST".into()),
        Err(e) => Err(format!("expected STDERR_ERROR: {e}")),
    }
}

/// Nothing after the last reply: EOF (or a reset, when the server closed
/// with unread request bytes).
async fn expect_end(c: &mut Client) -> Result<(), String> {
    let mut rest = Vec::new();
    match c.r.get_mut().read_to_end(&mut rest).await {
        Ok(_) if rest.is_empty() => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && rest.is_empty() => Ok(()),
        Ok(_) | Err(_) => Err(format!("{} unexpected bytes after the last reply", rest.len())),
    }
}

async fn check_reply(f: &Fixture, c: &mut Client, req: &AnyRequest) -> Result<(), String> {
    let op = req.op();
    match c.stderr().await {
        Ok(()) => {}
        Err(ClientError::Daemon(m)) if m.starts_with(op.name()) => {
            return match answerable(f, req) {
                true => Err(format!("an error for a request the fixture answers: {m:?}")),
                false => Ok(()),
            };
        }
        Err(ClientError::Daemon(m)) => return Err(format!("error does not name the op: {m:?}")),
        Err(e) => return Err(format!("STDERR frames do not decode: {e}")),
    }
    body(f, c, req).await.map_err(|e| format!("reply body: {e}"))
}

/// Decode the reply of a request of type `Q` with the daemon's own type.
async fn reply<Q: snix_lower_store_protocol::request::Request>(c: &mut Client, _: &Q) -> Result<Q::Reply, String> {
    Q::Reply::decode(&mut c.r).await.map_err(|e| e.to_string())
}

/// The reply after STDERR_LAST, in the layout Nix's client reads for `req`.
async fn body(f: &Fixture, c: &mut Client, req: &AnyRequest) -> Result<(), String> {
    use AnyRequest as Q;
    if is_write(req) {
        return Err("a write op was answered with STDERR_LAST".into());
    }
    match req {
        Q::IsValidPath(q) => is_valid(f, &q.path, reply(c, q).await?)?,
        Q::HasSubstitutes(q) => drop(reply(c, q).await?),
        Q::QuerySubstitutablePathInfo(q) => {
            if reply(c, q).await?.is_some() {
                return Err("a substitutable path info from a store without substituters".into());
            }
        }
        Q::QueryValidPaths(q) => valid_subset(f, &q.paths, reply(c, q).await?)?,
        Q::QueryAllValidPaths(q) => paths(f, reply(c, q).await?)?,
        Q::QueryReferences(q) => references(f, &q.path, reply(c, q).await?)?,
        Q::QueryReferrers(q) => referrers(f, &q.path, reply(c, q).await?)?,
        Q::QueryValidDerivers(q) => paths(f, reply(c, q).await?)?,
        Q::QueryDerivationOutputs(q) => paths(f, reply(c, q).await?)?,
        Q::QueryDerivationOutputNames(q) => drop(reply(c, q).await?),
        Q::QueryPathInfo(q) => path_info(f, reply(c, q).await?, &q.path)?,
        Q::QueryPathHash(q) => path_hash(f, &q.path, reply(c, q).await?)?,
        Q::QueryDeriver(q) => opt_path(f, reply(c, q).await?)?,
        Q::QueryPathFromHashPart(q) => opt_path(f, reply(c, q).await?)?,
        Q::QueryDerivationOutputMap(q) => {
            for (_, p) in reply(c, q).await?.0 {
                opt_path(f, p)?;
            }
        }
        Q::QueryMissing(q) => missing(f, reply(c, q).await?, q)?,
        // From 1.31 a set of realisations as JSON, before a set of paths.
        Q::QueryRealisation(q) => {
            let r = reply(c, q).await?;
            if !c.version.at_least(31) {
                paths(f, r.0.into_iter().map(|r| r.out_path).collect())?;
            }
        }
        Q::QuerySubstitutablePaths(q) => none(reply(c, q).await?.len())?,
        Q::QuerySubstitutablePathInfos(q) => none(reply(c, q).await?.0.len())?,
        Q::FindRoots(q) => none(reply(c, q).await?.0.len())?,
        Q::NarFromPath(q) => {
            reply(c, q).await?;
            nar(f, c, &q.path).await?
        }
        Q::SetOptions(q) => reply(c, q).await?,
        Q::AddTempRoot(q) => one(reply(c, q).await?)?,
        Q::AddIndirectRoot(q) => one(reply(c, q).await?)?,
        Q::SyncWithGC(q) => one(reply(c, q).await?)?,
        Q::OptimiseStore(q) => one(reply(c, q).await?)?,
        Q::EnsurePath(q) => one(reply(c, q).await?)?,
        Q::BuildPaths(q) => one(reply(c, q).await?)?,
        Q::VerifyStore(q) => verify_store(reply(c, q).await?, c.log.len())?,
        // Any other op: its reply decodes with its own reply type.
        other => other.skip_reply(&mut c.r).await.map_err(|e| e.to_string())?,
    }
    Ok(())
}

/// IsValidPath: true exactly for the fixture's indexed paths.
fn is_valid(f: &Fixture, path: &str, got: bool) -> Result<(), String> {
    let want = f.sd.parse(path).is_ok_and(|p| f.indexed(&p).is_some());
    if got != want {
        return Err(format!("{got} for {path:?}, the fixture says {want}"));
    }
    Ok(())
}

/// QueryValidPaths: exactly the asked paths that are indexed.
fn valid_subset(f: &Fixture, asked: &[String], got: Vec<String>) -> Result<(), String> {
    let want = asked
        .iter()
        .filter(|p| f.sd.parse(p).is_ok_and(|p| f.indexed(&p).is_some()));
    same_set(got, want.cloned().collect())
}

/// QueryReferences: the indexed references of `path`.
fn references(f: &Fixture, path: &str, got: Vec<String>) -> Result<(), String> {
    let refs = &entry(f, path)?.references;
    same_set(got, refs.iter().map(|r| f.sd.display(r)).collect())
}

/// QueryReferrers: the indexed paths that reference `path`.
fn referrers(f: &Fixture, path: &str, got: Vec<String>) -> Result<(), String> {
    let p = valid_path(f, path)?;
    let want = f.entries.iter().filter(|e| e.references.contains(&p));
    same_set(got, want.map(|e| f.sd.display(&e.path)).collect())
}

/// QueryPathHash: the indexed narHash, in base16.
fn path_hash(f: &Fixture, path: &str, got: String) -> Result<(), String> {
    let want = entry(f, path)?.nar_hash.to_base16();
    if got != want {
        return Err(format!("narHash {got:?}, the index has {want}"));
    }
    Ok(())
}

/// VerifyStore: errors reported exactly when log lines came with them.
fn verify_store(errors: bool, log_lines: usize) -> Result<(), String> {
    if errors == (log_lines == 0) {
        return Err(format!("VerifyStore says errors={errors} after {log_lines} log lines"));
    }
    Ok(())
}

/// Ops that would write (AddPermRoot would write a root): never answered.
fn is_write(req: &AnyRequest) -> bool {
    use AnyRequest as Q;
    matches!(
        req,
        Q::AddPermRoot(_)
            | Q::AddToStore(_)
            | Q::AddTextToStore(_)
            | Q::AddToStoreNar(_)
            | Q::AddMultipleToStore(_)
            | Q::AddBuildLog(_)
            | Q::AddSignatures(_)
            | Q::BuildDerivation(_)
            | Q::BuildPathsWithResults(_)
            | Q::CollectGarbage(_)
            | Q::RegisterDrvOutput(_)
            | Q::ImportPaths(_)
            | Q::ExportPath(_)
    )
}

/// Whether the fixture answers `req` without an error: every path it names
/// parses (QueryReferences: and is indexed). Ops not listed: not judged.
fn answerable(f: &Fixture, req: &AnyRequest) -> bool {
    use AnyRequest as Q;
    let parses = |p: &String| f.sd.parse(p).is_ok();
    match req {
        Q::IsValidPath(q) => parses(&q.path),
        Q::QueryValidPaths(q) => q.paths.iter().all(parses),
        Q::QueryReferrers(q) => parses(&q.path),
        Q::QueryReferences(q) => f.sd.parse(&q.path).is_ok_and(|p| f.indexed(&p).is_some()),
        Q::QueryMissing(q) => q
            .targets
            .iter()
            .all(|t| parses(&t.as_str().split('!').next().unwrap_or_default().to_owned())),
        _ => false,
    }
}

/// `got` holds each path of `want` once, and nothing else (valid paths).
fn same_set(got: Vec<String>, want: Vec<String>) -> Result<(), String> {
    let want: std::collections::BTreeSet<String> = want.into_iter().collect();
    let mut sorted = got.clone();
    sorted.sort();
    sorted.dedup();
    if sorted.len() != got.len() || sorted.iter().ne(want.iter()) {
        return Err(format!("answered {got:?}, the fixture says {want:?}"));
    }
    Ok(())
}

/// Is derived path `t` present in the fixture (as Nix's QueryMissing
/// judges it: a path is valid; `drv!outs` has each named output valid,
/// and has every name asked for; below 1.30 a bare `.drv` means `drv!*`)?
fn present(f: &Fixture, t: &str, bare_drv_means_outputs: bool) -> Result<bool, String> {
    let (base, wanted) = match t.split_once('!') {
        Some((b, o)) => (b, Some(o)),
        None => (t, None),
    };
    let p = valid_path(f, base)?;
    let wanted = match wanted {
        Some(o) => o,
        None if bare_drv_means_outputs && p.base_name().ends_with(".drv") => "*",
        None => return Ok(f.indexed(&p).is_some()),
    };
    let Some(outs) = f.outputs(&p) else { return Ok(false) };
    let wanted: Vec<&str> = wanted.split(',').collect();
    let asked = |n: &str| wanted.contains(&"*") || wanted.contains(&n);
    let all_valid = outs
        .iter()
        .filter(|(n, _)| asked(n))
        .all(|(_, o)| f.indexed(o).is_some());
    Ok(all_valid && wanted.iter().all(|w| *w == "*" || outs.iter().any(|(n, _)| n == w)))
}

/// QueryMissing: nothing to build or substitute, no sizes, and as unknown
/// exactly the base paths of the targets the fixture lacks.
fn missing(
    f: &Fixture,
    m: snix_lower_store_protocol::codec::Missing,
    q: &snix_lower_store_protocol::request::QueryMissing,
) -> Result<(), String> {
    none(m.will_build.len() + m.will_substitute.len())?;
    if (m.download_size, m.nar_size) != (0, 0) {
        return Err(format!("sizes {} / {} for a lower store", m.download_size, m.nar_size));
    }
    let mut want = Vec::new();
    for t in &q.targets {
        // The oracle splits the text itself, independently of `DerivedPath`.
        let t = t.as_str();
        if !present(f, t, q.bare_drv_means_outputs)? {
            want.push(f.sd.display(&valid_path(f, t.split('!').next().unwrap_or(t))?));
        }
    }
    same_set(m.unknown, want)
}

fn none(n: usize) -> Result<(), String> {
    match n {
        0 => Ok(()),
        n => Err(format!("{n} entries where the lower store has none")),
    }
}

fn one(w: u64) -> Result<(), String> {
    match w {
        1 => Ok(()),
        w => Err(format!("result word {w}, expected 1")),
    }
}

fn valid_path(f: &Fixture, s: &str) -> Result<StorePath, String> {
    f.sd.parse(s)
        .map_err(|e| format!("the reply holds an invalid store path: {e}"))
}

fn paths(f: &Fixture, v: Vec<String>) -> Result<(), String> {
    for p in v {
        valid_path(f, &p)?;
    }
    Ok(())
}

fn opt_path(f: &Fixture, p: Option<String>) -> Result<(), String> {
    match p {
        Some(p) => valid_path(f, &p).map(drop),
        None => Ok(()),
    }
}

fn entry<'a>(f: &'a Fixture, requested: &str) -> Result<&'a PathInfo, String> {
    let p = valid_path(f, requested)?;
    f.entries
        .iter()
        .find(|e| e.path == p)
        .ok_or_else(|| format!("answered for '{requested}', which is not in the index"))
}

fn path_info(f: &Fixture, info: Option<UnkeyedValidPathInfo>, requested: &str) -> Result<(), String> {
    let Some(info) = info else { return Ok(()) };
    let want = entry(f, requested)?;
    opt_path(f, info.deriver)?;
    if info.nar_hash != want.nar_hash.to_base16() {
        return Err(format!(
            "narHash {:?}, the index has {}",
            info.nar_hash,
            want.nar_hash.to_base16()
        ));
    }
    paths(f, info.references)?;
    if info.nar_size != want.nar_size {
        return Err(format!("narSize {}, the index has {}", info.nar_size, want.nar_size));
    }
    Ok(())
}

/// Exactly the indexed NAR size, hashing to the indexed NAR hash, and a
/// NAR by the daemon's own NAR parser.
async fn nar(f: &Fixture, c: &mut Client, requested: &str) -> Result<(), String> {
    let want = entry(f, requested)?;
    let mut bytes = vec![0u8; want.nar_size as usize];
    c.r.get_mut()
        .read_exact(&mut bytes)
        .await
        .map_err(|e| format!("NAR shorter than its {} bytes: {e}", want.nar_size))?;
    let mut sink = HashingSink::default();
    std::io::Write::write_all(&mut sink, &bytes).map_err(|e| e.to_string())?;
    if sink.finish().0 != want.nar_hash {
        return Err("the NAR does not hash to the indexed NAR hash".into());
    }
    let mut r = WireReader::new(Cursor::new(&bytes[..]), limits());
    skip_nar(&mut r).await.map_err(|e| format!("not a NAR: {e}"))?;
    if r.get_mut().position() != want.nar_size {
        return Err("the NAR ends before its indexed size".into());
    }
    Ok(())
}
