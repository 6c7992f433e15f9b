//! An index shipped inside the image: `build-index` writes it into the image
//! root `R` (store objects in `R/nix/store`, the index in
//! `R/.snix-lower-store`, outside the store dir), `serve` opens it read-only
//! from there with no state dir and no import, and refuses an index that
//! belongs to another image or is not one.
//! Runs the real binary on a socket and queries it through the client.
//! The daemon's stdout and stderr go to a file beside the socket (never an
//! unread pipe), printed when a query fails. The read-only bind-mount test
//! needs root; without it, it fails unless `SNIX_ALLOW_SKIP=1` (not under
//! `CI=true`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

use snix_lower_store_testkit::client::Client;
use snix_lower_store_types::path_info::PathInfo;
use snix_lower_store_types::StoreDir;

const BIN: &str = env!("CARGO_BIN_EXE_snix-lower-store");

/// A generated image (root, and its store dir as the lower dir) and its
/// registration file.
struct Image {
    root: PathBuf,
    lower: PathBuf,
    registration: PathBuf,
    entries: Vec<PathInfo>,
}

fn sd() -> StoreDir {
    StoreDir::new("/nix/store").unwrap()
}

fn make_image(dir: &Path, layers: usize, width: usize) -> Image {
    let root = dir.join("img");
    let lower = root.join("nix/store");
    let entries = snix_lower_store_testkit::demo::generate(&lower, &sd(), layers, width).unwrap();
    let registration = dir.join("registration");
    std::fs::write(
        &registration,
        snix_lower_store_testkit::demo::registration(&sd(), &entries),
    )
    .unwrap();
    Image {
        root,
        lower,
        registration,
        entries,
    }
}

fn cmd() -> Command {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("SNIX_LOWER_STORE_") {
            c.env_remove(k);
        }
    }
    c.args(["--log-target", "stderr"]);
    c
}

fn build_index(img: &Image) -> Output {
    cmd()
        .args(["build-index", "--registration"])
        .arg(&img.registration)
        .arg("--lower-dir")
        .arg(&img.lower)
        .output()
        .unwrap()
}

/// Every file under `root` with its contents (symlinks: their targets), sorted.
fn tree(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_owned();
            if m.is_dir() {
                out.push((rel, b"dir".to_vec()));
                walk(root, &p, out);
            } else if m.file_type().is_symlink() {
                out.push((
                    rel,
                    std::fs::read_link(&p).unwrap().into_os_string().into_encoded_bytes(),
                ));
            } else {
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// Where `serve` on `socket` writes its stdout and stderr: a file, so a
/// chatty daemon never blocks on a full pipe and its log can be read on
/// failure.
fn log_path(socket: &Path) -> PathBuf {
    socket.with_extension("log")
}

/// The daemon's log for `socket` so far (for failure messages).
fn log_of(socket: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(log_path(socket)).unwrap_or_default()).into_owned()
}

/// `serve` on `socket` with `extra` flags; waits (at most 30 s) for the
/// socket, or returns the failed start's output (its log as stderr).
fn serve(lower: &Path, socket: &Path, extra: &[&std::ffi::OsStr]) -> Result<Child, Output> {
    let log = std::fs::File::create(log_path(socket)).unwrap();
    let mut child = cmd()
        .arg("serve")
        .arg("--lower-dir")
        .arg(lower)
        .arg("--listen")
        .arg(socket)
        .args(extra)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let stderr = std::fs::read(log_path(socket)).unwrap();
            return Err(Output {
                status,
                stdout: Vec::new(),
                stderr,
            });
        }
        if socket.exists() {
            return Ok(child);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve made no socket in 30 s; its log:\n{}", log_of(socket));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn refused(lower: &Path, socket: &Path, state: &Path) -> String {
    let out = serve(lower, socket, &["--state-dir".as_ref(), state.as_os_str()]).expect_err("serve started");
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `f`; if it panics, prints the log of the daemon on `socket` first.
fn with_log<T>(socket: &Path, f: impl FnOnce() -> T + std::panic::UnwindSafe) -> T {
    std::panic::catch_unwind(f).unwrap_or_else(|e| {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "log of the daemon on {}:\n{}",
            socket.display(),
            log_of(socket)
        );
        std::panic::resume_unwind(e)
    })
}

/// Every entry answers QueryPathInfo with its NAR hash and size (the
/// daemon's log is printed if not).
fn query_all(socket: &Path, entries: &[PathInfo]) {
    with_log(socket, || query_all_quietly(socket, entries))
}

fn query_all_quietly(socket: &Path, entries: &[PathInfo]) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = Client::connect(socket, 38).await.unwrap();
        for e in entries {
            let info = c
                .query_path_info(&sd().display(&e.path))
                .await
                .unwrap()
                .expect("path known");
            assert_eq!(info.nar_size, e.nar_size);
            assert_eq!(info.nar_hash, e.nar_hash.to_base16());
        }
        let missing = format!("/nix/store/{}-missing", "0".repeat(32));
        assert!(c.query_path_info(&missing).await.unwrap().is_none());
    });
}

/// Serves `lower` (its own index) with a state dir that does not exist, which
/// must still not exist afterwards; queries every entry.
fn serve_from_image(dir: &Path, lower: &Path, entries: &[PathInfo]) {
    let socket = dir.join("sock");
    let state = dir.join("no-state");
    let mut child = serve(lower, &socket, &["--state-dir".as_ref(), state.as_os_str()]).unwrap_or_else(|o| {
        panic!("serve failed: {}", String::from_utf8_lossy(&o.stderr));
    });
    query_all(&socket, entries);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!state.exists(), "serve created a state dir");
}

#[test]
fn build_index_then_serve_from_the_image_without_writing_it() {
    let t = tempfile::tempdir().unwrap();
    // Characters a SQLite URI must escape.
    let dir = t.path().join("a b%c?d#e");
    let img = make_image(&dir, 3, 3);
    let out = build_index(&img);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let index_dir = img.root.join(".snix-lower-store");
    let mut names: Vec<_> = std::fs::read_dir(&index_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("id"), std::ffi::OsString::from("index")],
        "no -wal, -shm or temporary left"
    );
    assert!(
        !img.lower.join(".snix-lower-store").exists(),
        "the index must stay out of the store dir (the overlay's lowerdir)"
    );
    let before = tree(&img.root);
    serve_from_image(&dir, &img.lower, &img.entries);
    assert!(before == tree(&img.root), "the image changed while being served");
}

#[test]
fn serves_from_a_read_only_bind_mount() {
    if !rustix::process::geteuid().is_root() {
        let ci = std::env::var("CI").as_deref() == Ok("true");
        let allowed = std::env::var("SNIX_ALLOW_SKIP").as_deref() == Ok("1");
        assert!(
            allowed && !ci,
            "serves_from_a_read_only_bind_mount needs root for mount --bind -o ro: run the tests as root, \
             or set SNIX_ALLOW_SKIP=1 to skip it (never under CI=true)"
        );
        // The harness captures eprintln!; the skip must show in a normal run.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED serves_from_a_read_only_bind_mount: needs root"
        );
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let img = make_image(t.path(), 3, 2);
    assert!(build_index(&img).status.success());
    let mnt = t.path().join("ro");
    std::fs::create_dir(&mnt).unwrap();
    let mount = |args: &[&std::ffi::OsStr]| {
        let s = Command::new("mount").args(args).status().unwrap();
        assert!(s.success(), "mount {args:?}");
    };
    mount(&["--bind".as_ref(), img.root.as_os_str(), mnt.as_os_str()]);
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    mount(&["-o".as_ref(), "remount,bind,ro".as_ref(), mnt.as_os_str()]);
    assert!(
        std::fs::write(mnt.join("probe"), b"").is_err(),
        "the bind mount is writable"
    );
    let before = tree(&mnt);
    serve_from_image(t.path(), &mnt.join("nix/store"), &img.entries);
    assert!(before == tree(&mnt));
    // build-index into a frozen image says why it cannot.
    let frozen = Image {
        root: mnt.clone(),
        lower: mnt.join("nix/store"),
        registration: img.registration.clone(),
        entries: Vec::new(),
    };
    let out = build_index(&frozen);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("before freezing the image"), "{err}");
}

#[test]
fn an_index_of_another_image_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let a = make_image(&t.path().join("a"), 3, 3);
    let b = make_image(&t.path().join("b"), 4, 3);
    assert!(build_index(&a).status.success());
    let b_index = b.root.join(".snix-lower-store/index");
    std::fs::create_dir_all(b_index.parent().unwrap()).unwrap();
    std::fs::copy(a.root.join(".snix-lower-store/index"), &b_index).unwrap();
    let err = refused(&b.lower, &t.path().join("sock"), &t.path().join("none"));
    assert!(err.contains("does not match the lower dir"), "{err}");
    assert!(err.contains(&b_index.display().to_string()), "{err}");
    assert!(err.contains(&b.lower.display().to_string()), "{err}");
    assert!(err.contains("build-index"), "{err}");

    // Same count of store paths, one object replaced by another.
    let c_root = t.path().join("c");
    let c_lower = c_root.join("nix/store");
    std::fs::create_dir_all(&c_lower).unwrap();
    std::fs::create_dir_all(c_root.join(".snix-lower-store")).unwrap();
    for e in std::fs::read_dir(&a.lower).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir(c_lower.join(e.file_name())).unwrap();
        } else {
            std::fs::copy(e.path(), c_lower.join(e.file_name())).unwrap();
        }
    }
    for f in ["index", "id"] {
        std::fs::copy(
            a.root.join(".snix-lower-store").join(f),
            c_root.join(".snix-lower-store").join(f),
        )
        .unwrap();
    }
    let gone = a.entries[0].path.base_name();
    let gone_path = c_lower.join(gone);
    if gone_path.is_dir() {
        std::fs::remove_dir_all(&gone_path).unwrap();
    } else {
        std::fs::remove_file(&gone_path).unwrap();
    }
    std::fs::write(c_lower.join(format!("{}-other", "1".repeat(32))), b"x").unwrap();
    let err = refused(&c_lower, &t.path().join("sock"), &t.path().join("none"));
    assert!(
        err.contains(&format!("indexed path {gone} is not in the lower dir")),
        "{err}"
    );
}

/// Copies `from`'s `.snix-lower-store/<f>` over `to`'s.
fn copy_image_file(from: &Image, to: &Image, f: &str) {
    std::fs::copy(
        from.root.join(".snix-lower-store").join(f),
        to.root.join(".snix-lower-store").join(f),
    )
    .unwrap();
}

#[test]
fn an_index_file_copied_alone_into_another_image_is_refused_by_the_id() {
    let t = tempfile::tempdir().unwrap();
    let a = make_image(&t.path().join("a"), 3, 3);
    let b = make_image(&t.path().join("b"), 3, 3);
    assert!(build_index(&a).status.success());
    assert!(build_index(&b).status.success());
    copy_image_file(&a, &b, "index");
    let err = refused(&b.lower, &t.path().join("sock"), &t.path().join("none"));
    assert!(err.contains("does not match the lower dir"), "{err}");
    assert!(err.contains("the index has image id"), "{err}");
    assert!(err.contains(".snix-lower-store/id holds"), "{err}");
    // Rebuilt in place: served again.
    assert!(build_index(&b).status.success());
    serve_from_image(t.path(), &b.lower, &b.entries);
}

#[test]
fn an_index_dir_copied_into_another_image_is_refused_by_the_sample() {
    let t = tempfile::tempdir().unwrap();
    let a = make_image(&t.path().join("a"), 3, 3);
    let b = make_image(&t.path().join("b"), 3, 4);
    assert!(build_index(&a).status.success());
    std::fs::create_dir_all(b.root.join(".snix-lower-store")).unwrap();
    copy_image_file(&a, &b, "index");
    copy_image_file(&a, &b, "id");
    let err = refused(&b.lower, &t.path().join("sock"), &t.path().join("none"));
    assert!(err.contains("does not match the lower dir"), "{err}");
    assert!(err.contains("is not in the lower dir"), "{err}");

    // Same names, one object's contents changed in length: its NAR size no
    // longer fits.
    let changed = a.entries[0].path.base_name();
    std::fs::write(a.lower.join(changed), b"a different length than before\n").unwrap();
    let err = refused(&a.lower, &t.path().join("sock"), &t.path().join("none"));
    assert!(err.contains(&format!("indexed path {changed} has NAR size")), "{err}");
}

/// The base name of the indexed path with the highest id (off the sample
/// when there are more paths than the sample holds).
fn last_indexed(img: &Image) -> String {
    let c = rusqlite::Connection::open(img.root.join(".snix-lower-store/index")).unwrap();
    // Stored as the hash part's 20 bytes, then the name (index schema 4).
    let key: Vec<u8> = c
        .query_row("SELECT base_name FROM paths ORDER BY id DESC LIMIT 1", [], |r| r.get(0))
        .unwrap();
    let (hash, name) = key.split_at(20);
    format!(
        "{}-{}",
        snix_lower_store_types::hash::nix32_encode(hash),
        std::str::from_utf8(name).unwrap()
    )
}

#[test]
fn image_check_full_and_an_index_without_id_list_the_lower_dir() {
    let t = tempfile::tempdir().unwrap();
    // More paths than the 1024 sampled at start.
    let img = make_image(t.path(), 1, 1100);
    assert!(build_index(&img).status.success());
    let gone = last_indexed(&img);
    std::fs::remove_file(img.lower.join(&gone)).unwrap();
    // The default check samples and misses it (`verify` is for that)...
    let socket = t.path().join("sock");
    let none = t.path().join("none");
    let mut child = serve(&img.lower, &socket, &["--state-dir".as_ref(), none.as_os_str()]).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::remove_file(&socket).unwrap();
    // ...the full check counts the lower dir and refuses.
    let out = serve(
        &img.lower,
        &socket,
        &[
            "--state-dir".as_ref(),
            none.as_os_str(),
            "--image-check".as_ref(),
            "full".as_ref(),
        ],
    )
    .expect_err("serve started");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not match the lower dir"), "{err}");
    // Every generated path but the removed one (the demo store's own paths
    // included, so the count follows the generator).
    let left = img.entries.len() - 1;
    assert!(err.contains(&format!("the lower dir holds {left}")), "{err}");

    // An index from before image ids: the listing, by default.
    let c = rusqlite::Connection::open(img.root.join(".snix-lower-store/index")).unwrap();
    assert_eq!(c.execute("DELETE FROM meta WHERE key = 'image_id'", []).unwrap(), 1);
    drop(c);
    let err = refused(&img.lower, &socket, &none);
    assert!(err.contains("has no image id"), "{err}");
    // Every generated path but the removed one (the demo store's own paths
    // included, so the count follows the generator).
    let left = img.entries.len() - 1;
    assert!(err.contains(&format!("the lower dir holds {left}")), "{err}");
}

#[test]
fn a_corrupt_or_foreign_index_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let img = make_image(t.path(), 2, 2);
    assert!(build_index(&img).status.success());
    let index = img.root.join(".snix-lower-store/index");
    let good = std::fs::read(&index).unwrap();

    std::fs::write(&index, vec![0x5a; 8192]).unwrap();
    let err = refused(&img.lower, &t.path().join("sock"), &t.path().join("none"));
    assert!(err.contains(&index.display().to_string()), "{err}");
    assert!(err.contains("not a database"), "{err}");

    // A valid database without the image's identity (e.g. a state dir's index).
    std::fs::write(&index, &good).unwrap();
    let c = rusqlite::Connection::open(&index).unwrap();
    c.execute("DELETE FROM meta WHERE key LIKE 'image_%'", []).unwrap();
    drop(c);
    let err = refused(&img.lower, &t.path().join("sock"), &t.path().join("none"));
    assert!(err.contains("is not an image index"), "{err}");

    // An empty file (SQLite reads it as a database without tables).
    std::fs::write(&index, b"").unwrap();
    let err = refused(&img.lower, &t.path().join("sock"), &t.path().join("none"));
    assert!(err.contains("is not an image index"), "{err}");

    // --index names the file explicitly.
    let err = serve(
        &img.lower,
        &t.path().join("sock"),
        &["--index".as_ref(), t.path().join("registration").as_os_str()],
    )
    .err()
    .unwrap();
    let err = String::from_utf8_lossy(&err.stderr);
    assert!(err.contains("not a database"), "{err}");
    let err = serve(
        &img.lower,
        &t.path().join("sock"),
        &["--index".as_ref(), t.path().join("nothing").as_os_str()],
    )
    .expect_err("serve started");
    let err = String::from_utf8_lossy(&err.stderr);
    assert!(err.contains("no such file; write it with"), "{err}");
}

#[test]
fn a_state_dir_index_still_wins_over_the_image_index() {
    let t = tempfile::tempdir().unwrap();
    let img = make_image(t.path(), 2, 2);
    assert!(build_index(&img).status.success());
    let state = t.path().join("state");
    let out = cmd()
        .args(["import", "--registration"])
        .arg(&img.registration)
        .arg("--lower-dir")
        .arg(&img.lower)
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Break the image's index: serving must not look at it.
    std::fs::write(img.root.join(".snix-lower-store/index"), b"junk").unwrap();
    let socket = t.path().join("sock");
    let mut child = serve(&img.lower, &socket, &["--state-dir".as_ref(), state.as_os_str()]).unwrap();
    query_all(&socket, &img.entries);
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A lower dir that does not end in the store dir (store objects at the top
/// of the mount) has no image root: build-index refuses to write the index
/// into the store dir and says how to lay the image out; with --output the
/// index has no id and serve (given --index) checks it by listing.
#[test]
fn a_lower_dir_without_an_image_root_keeps_the_index_out_of_the_store_dir() {
    let t = tempfile::tempdir().unwrap();
    let lower = t.path().join("flat");
    let entries = snix_lower_store_testkit::demo::generate(&lower, &sd(), 2, 2).unwrap();
    let registration = t.path().join("registration");
    std::fs::write(
        &registration,
        snix_lower_store_testkit::demo::registration(&sd(), &entries),
    )
    .unwrap();
    let flat = Image {
        root: lower.clone(),
        lower: lower.clone(),
        registration,
        entries,
    };
    let out = build_index(&flat);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not end in the store dir /nix/store"), "{err}");
    assert!(err.contains("<root>/nix/store"), "{err}");
    assert!(!lower.join(".snix-lower-store").exists());

    let index = t.path().join("elsewhere/index");
    let out = cmd()
        .args(["build-index", "--registration"])
        .arg(&flat.registration)
        .arg("--lower-dir")
        .arg(&lower)
        .arg("--output")
        .arg(&index)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!lower.join(".snix-lower-store").exists());
    let socket = t.path().join("sock");
    let mut child = serve(&lower, &socket, &["--index".as_ref(), index.as_os_str()]).unwrap_or_else(|o| {
        panic!("serve failed: {}", String::from_utf8_lossy(&o.stderr));
    });
    query_all(&socket, &flat.entries);
    child.kill().unwrap();
    child.wait().unwrap();
}

/// `--image-id` and SOURCE_DATE_EPOCH: the id written is the one given
/// (checked: 32 hex digits), and building the same image twice, a second
/// apart, gives byte-identical index and id files, as a Nix derivation
/// (`mkLowerImage`) needs.
#[test]
fn a_given_image_id_makes_the_build_reproducible() {
    let t = tempfile::tempdir().unwrap();
    let id = "0123456789ABCDEF0123456789abcdef";
    let mut files = Vec::new();
    for n in ["a", "b"] {
        let img = make_image(&t.path().join(n), 3, 3);
        // A second apart: without SOURCE_DATE_EPOCH the registration times
        // (a registration has none) would be the build's clock.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let out = cmd()
            .args(["build-index", "--image-id", id, "--registration"])
            .arg(&img.registration)
            .arg("--lower-dir")
            .arg(&img.lower)
            .env("SOURCE_DATE_EPOCH", "315532800")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let meta = img.root.join(".snix-lower-store");
        assert_eq!(
            std::fs::read_to_string(meta.join("id")).unwrap(),
            format!("{}\n", id.to_ascii_lowercase())
        );
        files.push((
            std::fs::read(meta.join("index")).unwrap(),
            std::fs::read(meta.join("id")).unwrap(),
        ));
        serve_from_image(&t.path().join(n), &img.lower, &img.entries);
    }
    assert!(files[0] == files[1], "the same inputs gave different index files");
    let img = make_image(&t.path().join("c"), 1, 1);
    for bad in [
        "0123",
        "g123456789abcdef0123456789abcdef",
        "0123456789abcdef0123456789abcdef0",
    ] {
        let out = cmd()
            .args(["build-index", "--image-id", bad, "--registration"])
            .arg(&img.registration)
            .arg("--lower-dir")
            .arg(&img.lower)
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("give 32 hex digits"));
        assert!(!img.root.join(".snix-lower-store").exists());
    }
}
