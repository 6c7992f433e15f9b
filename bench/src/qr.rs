//! The local-overlay measurement: `nix-store -qR` of the whole closure by
//! Nix's own client, with each daemon as the lower store of an overlay
//! mounted at the chroot's /nix/store.
//!
//! Invariants: the overlay and its tmpfs are unmounted whatever happens;
//! the daemons' runs are interleaved after one untimed warm-up each, and a
//! run that prints the wrong number of paths fails the mode.

use anyhow::{bail, Result};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use snix_lower_store_bench::gen::Store;

use crate::env::{sh_ok, Env};

// ---------------------------------------------------------------- local-overlay -qR

/// The local-overlay store URL with daemon `name` (listening on `socket`)
/// as the lower store and `upper` (inside the chroot) as the upper layer.
pub(crate) fn qr_url(env: &Env, store: &Store, name: &str, socket: &Path, upper: &str) -> Result<String> {
    if name == "ours" {
        let out = sh_ok(
            Command::new(&env.ours)
                .arg("store-url")
                .arg("--socket")
                .arg(env.inside(socket))
                .arg("--lower-dir")
                .arg(env.inside(&store.store_dir()))
                .arg("--upper-layer")
                .arg(upper),
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        let lower = format!("unix://{}?real={}", env.inside(socket), env.inside(&store.store_dir()));
        Ok(format!(
            "local-overlay://?lower-store={}&upper-layer={}&check-mount=true",
            enc(&lower),
            enc(upper)
        ))
    }
}

/// Builds a daemon's local-overlay URL from the upper layer's path.
pub(crate) type UrlOf<'a> = dyn Fn(&Env, &str) -> Result<String> + 'a;

/// Mount the overlay at the chroot's /nix/store over `store`'s objects once
/// and time `nix-store -qR` of the whole closure through each daemon as the
/// lower store, interleaved (a, b, a, b, …): one untimed warm-up run each,
/// then `runs` timed runs each. Returns each daemon's run times.
pub(crate) fn time_qr(
    env: &mut Env,
    store: &Store,
    daemons: &[(&str, Box<UrlOf>)],
    runs: usize,
) -> Result<Vec<Vec<f64>>> {
    let nix = env.rootfs.join("nix");
    env.mount_tmpfs(&nix)?;
    let res = (|| {
        std::fs::create_dir_all(nix.join("store"))?;
        std::fs::create_dir_all(nix.join("var/nix/gcroots"))?;
        let ov = env.work.join("ov-qr");
        let _ = std::fs::remove_dir_all(&ov);
        std::fs::create_dir_all(ov.join("upper"))?;
        std::fs::create_dir_all(ov.join("work"))?;
        let upper = env.inside(&ov.join("upper"));
        let opts = format!(
            "lowerdir={},upperdir={upper},workdir={}",
            env.inside(&store.store_dir()),
            env.inside(&ov.join("work"))
        );
        sh_ok(&mut env.chroot(&["mount", "-t", "overlay", "overlay", "-o", &opts, "/nix/store"]))?;
        let r = (|| {
            let urls = daemons
                .iter()
                .map(|(_, f)| f(env, &upper))
                .collect::<Result<Vec<_>>>()?;
            let mut times = vec![Vec::new(); daemons.len()];
            for i in 0..=runs {
                for (k, url) in urls.iter().enumerate() {
                    let t0 = Instant::now();
                    let out = sh_ok(&mut env.chroot(&["nix-store", "--store", url, "-qR", store.closure_root()]))?;
                    let dt = t0.elapsed().as_secs_f64();
                    let lines = out.stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count();
                    if lines != store.paths.len() {
                        bail!(
                            "{}: nix-store -qR printed {lines} paths, expected {}",
                            daemons[k].0,
                            store.paths.len()
                        );
                    }
                    if i > 0 {
                        times[k].push(dt);
                    }
                }
            }
            Ok(times)
        })();
        let _ = Command::new("umount").arg("-l").arg(nix.join("store")).status();
        let _ = std::fs::remove_dir_all(&ov);
        r
    })();
    env.umount_last();
    res
}

pub(crate) fn enc(s: &str) -> String {
    snix_lower_store::overlay_url::encode(s)
}
