//! A configuration booted under systemd as PID 1 (systemd-nspawn of a cached
//! root), commands inside it (nsenter), and Nix clients against it.
//!
//! Invariants: the container runs with `--volatile=overlay` (the cached root
//! is not written); the configuration's units, /etc files and store paths
//! are bound read-only; a `Container` is stopped when dropped, so an early
//! return never leaves one running.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::proc::{cp, fresh_dir, glob_dir, run, s, tail, timeout, Out};
use crate::Ctx;

/// Nix 2.34 (sid's root, bound at /srv/sid) in the container's mount
/// namespace: the container's /run, overlay, /etc/nix and /proc bound into
/// sid's root, then pivot_root (Nix builds in a user namespace, which the
/// kernel refuses to a chrooted process). It runs inside the container's
/// namespace, where only the container's own tools exist, hence sh.
const SID_SCRIPT: &str = r#"s=/srv/sid
mount --rbind /run $s/run
mount -t tmpfs -o mode=0755 sid-var-lib $s/var/lib
mkdir -p $s/var/lib/snix-overlay
mount --rbind /var/lib/snix-overlay $s/var/lib/snix-overlay
mount --bind /etc/nix $s/etc/nix
mount --rbind /dev $s/dev
mount -t tmpfs -o mode=1777 sid-tmp $s/tmp
mount -t proc proc $s/proc
mount --make-rprivate /
mount --rbind $s $s
mount -t tmpfs -o mode=0755 sid-old-root $s/mnt
mkdir $s/mnt/old-root
cd $s
pivot_root . mnt/old-root
umount -l /mnt/old-root
exec env HOME=/tmp "$@""#;

pub(crate) struct Container {
    child: Option<Child>,
    pub(crate) leader: Option<u32>,
    machine: String,
    /// `systemctl is-system-running --wait`, or why there is no PID 1.
    pub(crate) state: String,
}

/// What to boot: root file system, configuration root, lower, overlay root.
pub(crate) struct BootSpec<'a> {
    pub(crate) rootfs: &'a str,
    pub(crate) root: &'a Path,
    pub(crate) lower: &'a Path,
    pub(crate) overlay_root: &'a Path,
    /// More nspawn `--bind` options (the switch's second lower).
    pub(crate) extra_binds: Vec<String>,
}

/// Lays out the units dir beside `root` (the root's own units, then the
/// configuration's) and /etc/fstab without its "/" line; returns the binds.
fn layout(ctx: &Ctx, spec: &BootSpec) -> (PathBuf, Vec<String>) {
    let root = spec.root;
    let sd = root.join("../systemd-system");
    fresh_dir(&sd);
    let rootfs = ctx.rootfs_cache.join(spec.rootfs);
    cp(&[
        "-a",
        &format!("{}/etc/systemd/system/.", s(&rootfs)),
        &format!("{}/", s(&sd)),
    ]);
    cp(&[
        "-a",
        &format!("{}/etc/systemd/system/.", s(root)),
        &format!("{}/", s(&sd)),
    ]);
    write_fstab_container(&root.join("etc/fstab"), &root.join("etc/fstab.container"));
    let mut binds = vec![];
    for p in glob_dir(&root.join("nix/store")) {
        binds.push(format!("--bind-ro={}/nix/store/{p}:/nix/store/{p}", s(root)));
    }
    for p in glob_dir(&root.join("etc")) {
        if !matches!(p.as_str(), "systemd" | "fstab" | "fstab.container") {
            binds.push(format!("--bind-ro={}/etc/{p}:/etc/{p}", s(root)));
        }
    }
    (sd, binds)
}

/// `grep -v '^[^ ]* / ' FSTAB > OUT`, written in place (OUT may be bound).
pub(crate) fn write_fstab_container(fstab: &Path, out: &Path) {
    let text = fs::read_to_string(fstab).unwrap_or_default();
    let kept: String = text
        .lines()
        .filter(|l| !matches!(l.split_once(' '), Some((_, rest)) if rest.starts_with("/ ")))
        .map(|l| format!("{l}\n"))
        .collect();
    let _ = fs::write(out, kept);
}

impl Container {
    /// Boots `spec`; `leader` is None (and `state` says why) when no PID 1 came up.
    pub(crate) fn boot(ctx: &mut Ctx, spec: BootSpec) -> Container {
        let (sd, binds) = layout(ctx, &spec);
        ctx.boots += 1;
        let machine = format!("snixnl-{}-{}", std::process::id(), ctx.boots);
        let log = ctx.t.join(format!("nspawn-{}.log", spec.rootfs));
        let mut c = Command::new("systemd-nspawn");
        c.args([
            "--boot",
            "--quiet",
            "-D",
            s(&ctx.rootfs_cache.join(spec.rootfs)),
            "--volatile=overlay",
        ]);
        c.args([
            "--register=no",
            "--keep-unit",
            &format!("--machine={machine}"),
            "--private-network",
        ]);
        c.arg("--console=pipe")
            .arg(format!("--bind-ro={}:/etc/systemd/system", s(&sd)));
        c.arg(format!("--bind-ro={}/etc/fstab.container:/etc/fstab", s(spec.root)));
        c.arg(format!("--bind-ro={}:/srv/lower-image", s(spec.lower)));
        c.arg(format!("--bind={}:/var/lib/snix-overlay", s(spec.overlay_root)));
        c.arg(format!("--bind-ro={}/sid:/srv/sid", s(&ctx.rootfs_cache)));
        c.args(&binds).args(&spec.extra_binds);
        let out = fs::File::create(&log).ok();
        let err = out.as_ref().and_then(|f| f.try_clone().ok());
        c.stdin(Stdio::null());
        c.stdout(out.map_or_else(Stdio::null, Stdio::from))
            .stderr(err.map_or_else(Stdio::null, Stdio::from));
        let mut ct = Container {
            child: None,
            leader: None,
            machine,
            state: String::new(),
        };
        match c.spawn() {
            Ok(child) => ct.child = Some(child),
            Err(e) => {
                ct.state = format!("cannot run systemd-nspawn: {e}");
                return ct;
            }
        }
        ct.leader = ct.find_leader();
        if ct.leader.is_none() {
            ct.state = format!(
                "no PID 1 in the container: {}",
                tail(&fs::read_to_string(&log).unwrap_or_default(), 5)
            );
            return ct;
        }
        ct.wait_running();
        ct
    }

    /// The container's PID 1 among nspawn's children and grandchildren.
    fn find_leader(&self) -> Option<u32> {
        let pid = self.child.as_ref()?.id();
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            let kids = children(pid);
            let grand: Vec<u32> = kids.iter().flat_map(|k| children(*k)).collect();
            for p in kids.iter().chain(grand.iter()) {
                let status = fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
                let ns = status.lines().find(|l| l.starts_with("NSpid:"));
                if let Some(ns) = ns {
                    let f: Vec<&str> = ns.split_whitespace().collect();
                    if f.len() > 2 && f[f.len() - 1] == "1" {
                        return Some(*p);
                    }
                }
            }
            sleep(Duration::from_millis(200));
        }
        None
    }

    fn wait_running(&mut self) {
        let end = Instant::now() + Duration::from_secs(90);
        loop {
            self.state = self.in_c(90, &["systemctl", "is-system-running", "--wait"]).all();
            let st = self.state.as_str();
            if !(st == "offline" || st.contains("Failed to connect") || st.is_empty()) || Instant::now() >= end {
                break;
            }
            sleep(Duration::from_millis(300));
        }
    }

    /// `args` in all of the container's namespaces, clean environment.
    pub(crate) fn in_c_cmd<S: AsRef<str>>(&self, secs: u32, args: &[S]) -> Command {
        let leader = self.leader.unwrap_or(0).to_string();
        let mut c = timeout(
            secs,
            &[
                "nsenter",
                "-t",
                &leader,
                "-a",
                "env",
                "-i",
                &format!("PATH={}", testbed::rootfs::PATH),
                "HOME=/root",
                "LANG=C.UTF-8",
            ],
        );
        c.args(args.iter().map(|a| a.as_ref()));
        c
    }

    pub(crate) fn in_c<S: AsRef<str>>(&self, secs: u32, args: &[S]) -> Out {
        run(&mut self.in_c_cmd(secs, args))
    }

    /// Whether `args` succeed in the container (60 s).
    pub(crate) fn ok<S: AsRef<str>>(&self, args: &[S]) -> bool {
        self.in_c(60, args).ok
    }

    /// `nix path-info --store URL PATH` with the container's own Nix (60 s).
    pub(crate) fn path_info(&self, url: &str, path: &str) -> Out {
        let args = [
            "nix",
            "--extra-experimental-features",
            "nix-command",
            "path-info",
            "--store",
            url,
            path,
        ];
        self.in_c(60, &args)
    }

    /// Whether the store path `path` has an entry in the upper layer of
    /// the overlay under /var/lib/snix-overlay.
    pub(crate) fn in_upper(&self, path: &str) -> bool {
        let entry = format!("/var/lib/snix-overlay/upper/{}", path.trim_start_matches("/nix/store/"));
        self.ok(&["test", "-e", &entry])
    }

    /// `systemctl show -P KEY UNIT`.
    pub(crate) fn prop(&self, key: &str, unit: &str) -> String {
        self.in_c(15, &["systemctl", "show", "-P", key, unit]).out()
    }

    /// A Nix client command: "trixie" is the container's own Nix, "sid"
    /// Nix 2.34 as SID_SCRIPT runs it.
    pub(crate) fn nixc<S: AsRef<str>>(&self, client: &str, args: &[S]) -> Out {
        if client == "trixie" {
            return self.in_c(120, args);
        }
        let leader = self.leader.unwrap_or(0).to_string();
        let mut c = timeout(120, &["nsenter", "-t", &leader, "-m", "--", "env", "-i"]);
        c.args([
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG=C.UTF-8",
            "unshare",
            "-m",
            "--",
            "sh",
            "-ec",
            SID_SCRIPT,
        ]);
        c.arg("nixc").args(args.iter().map(|a| a.as_ref()));
        run(&mut c)
    }

    /// The store URL the module wrote.
    pub(crate) fn store_url(&self) -> String {
        self.in_c(60, &["cat", "/etc/snix-lower-store/store-url"]).out()
    }

    /// The last lines of the journal of `unit` in this boot, on one line.
    pub(crate) fn journal(&self, unit: &str, n: usize) -> String {
        crate::proc::tail1(
            &self
                .in_c(60, &["journalctl", "-b", "-u", unit, "--no-pager", "-o", "cat"])
                .stdout,
            n,
        )
    }

    /// Stops the container (SIGTERM, then SIGKILL after 20 s).
    pub(crate) fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let pid = child.id().to_string();
        let _ = run(Command::new("kill").args(["-TERM", &pid]));
        let end = Instant::now() + Duration::from_secs(20);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < end {
            sleep(Duration::from_millis(300));
        }
        if matches!(child.try_wait(), Ok(None)) {
            if let Some(l) = self.leader {
                let _ = run(Command::new("kill").args(["-KILL", &l.to_string()]));
            }
            sleep(Duration::from_secs(1));
            let _ = child.kill();
        }
        let _ = child.wait();
        let _ = fs::remove_dir_all(format!("/run/systemd/nspawn/propagate/{}", self.machine));
        self.leader = None;
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let mut v = vec![];
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|x| x.parse().ok());
        if ppid == Some(pid) {
            v.push(p);
        }
    }
    v
}
