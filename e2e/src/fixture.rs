//! Generates the lower store for a run, with real Nix.
//!
//! Nix builds into the chroot's own (scratch, tmpfs) `/nix/store` -- builds
//! into a store with a different root would force a sandbox, which cannot be
//! set up inside a chroot -- and the resulting `/nix` (objects and database)
//! is then copied to `/e2e/<name>/nix`, a local store Nix opens with
//! `local?root=/e2e/<name>` and the OverlayFS lower layer.
//!
//! Contents: text files with references in three layers (`builtins.toFile`),
//! a source tree added with `nix-store --add` (executable file, symlink),
//! derivation outputs (a single executable file; a deep directory with
//! symlinks and non-ASCII file names; a two-output derivation) and a final
//! derivation whose output depends on a `seed` argument, so building another
//! seed on top of the lower store needs only lower paths as inputs, and a
//! content-addressed (floating) derivation, built with `ca-derivations`
//! (enabled for every Nix command of the suite, see `rootfs`), whose output
//! path only the realisation Nix records names.
//! Signatures (so their conversion, through gRPC too, is compared): the final
//! output's closure is signed with one key, the final output and the source
//! tree also with a second (two signatures on one path); the keys are
//! generated for the run and deleted.

use crate::ctx::Ctx;
use crate::rootfs::{shq, Rootfs};
use anyhow::{bail, Context, Result};

const FIXTURE_NIX: &str = r#"# Lower-store fixture of the snix-lower-store end-to-end suite.
{ seed ? "1" }:
let
  system = builtins.currentSystem;
  sh = name: outputs: script: derivation {
    inherit name system outputs;
    builder = "/bin/sh";
    args = [ "-ec" script ];
    PATH = "/usr/bin:/bin";
  };
  leaf = builtins.toFile "e2e-leaf" "the bottom layer\n";
  mid = builtins.toFile "e2e-mid" "middle layer, refers to ${leaf}\n";
  top = builtins.toFile "e2e-top" "top layer, refers to ${mid}\n";
  exe = sh "e2e-exe" [ "out" ] ''
    printf '#!/bin/sh\necho %s\n' ${top} > $out
    chmod 0555 $out
  '';
  tree = sh "e2e-tree" [ "out" ] ''
    mkdir -p $out/d1/d2/d3/d4/d5/d6/d7/d8/d9/d10/d11/d12
    echo deep > $out/d1/d2/d3/d4/d5/d6/d7/d8/d9/d10/d11/d12/bottom.txt
    ln -s d1/d2/d3 $out/shortcut
    ln -s ${exe} $out/exe-link
    ln -s does-not-exist $out/dangling
    echo 'grüße' > "$out/grüße.txt"
    mkdir "$out/日本語"
    echo nihongo > "$out/日本語/ファイル ✓"
    printf '#!/bin/sh\nexit 0\n' > $out/run.sh
    chmod +x $out/run.sh
    echo ${mid} > $out/mid-ref
    : > $out/empty
  '';
  split = sh "e2e-split" [ "out" "dev" ] ''
    mkdir $out $dev
    echo ${tree} > $out/tree-ref
    echo $out > $dev/out-ref
  '';
  final = sh "e2e-final-${seed}" [ "out" ] ''
    mkdir $out
    echo ${split} ${split.dev} ${exe} > $out/inputs
    echo ${seed} > $out/seed
  '';
  # Floating content-addressed: the output path is known from the build's
  # realisation (Nix's Realisations table), not from the derivation.
  ca = derivation {
    name = "e2e-ca";
    inherit system;
    builder = "/bin/sh";
    args = [ "-ec" "mkdir $out; echo ${top} > $out/top-ref; echo content-addressed > $out/kind" ];
    PATH = "/usr/bin:/bin";
    __contentAddressed = true;
    outputHashMode = "recursive";
    outputHashAlgo = "sha256";
  };
  # Instantiated into the lower store but never built: its output is
  # missing, so queries about it (QueryMissing, output maps) have work to do.
  unbuilt = sh "e2e-unbuilt" [ "out" ] ''
    mkdir $out
    cat ${exe} > $out/copy-of-exe
    echo ${tree} > $out/tree-ref
  '';
in
{ inherit exe tree split final unbuilt ca; }
"#;

/// Where the expression lives inside the chroots.
pub const FIXTURE_FILE: &str = "/e2e/fixture/fixture.nix";

/// The `nix-build` command line that builds the fixture's `final` with seed
/// 2 (paths the generated lower store does not hold), `extra` appended (a
/// `--store`, for one): the build the overlay and rotation scenarios make
/// on top of a lower store.
pub(crate) fn seed2_build<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "nix-build",
        FIXTURE_FILE,
        "-A",
        "final",
        "--argstr",
        "seed",
        "2",
        "--no-out-link",
    ];
    args.extend_from_slice(extra);
    args
}

/// A generated lower store and the store paths of interest in it.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// Root of the local store, inside the chroots (`{root}/nix/store`).
    pub root: String,
    /// Label of the Nix that made it.
    pub made_by: String,
    pub leaf: String,
    pub mid: String,
    pub top: String,
    pub src: String,
    pub exe: String,
    pub tree: String,
    pub split_out: String,
    pub split_dev: String,
    pub final_out: String,
    pub final_drv: String,
    pub split_drv: String,
    pub tree_drv: String,
    /// A derivation in the lower store whose output was never built.
    pub unbuilt_drv: String,
    /// The content-addressed derivation and its (built) output.
    pub ca_drv: String,
    pub ca_out: String,
    /// Every valid path, sorted.
    pub all: Vec<String>,
}

impl Fixture {
    pub fn store_dir(&self) -> String {
        format!("{}/nix/store", self.root)
    }

    pub fn local_url(&self) -> String {
        format!("local?root={}", self.root)
    }

    /// Interesting paths for per-path queries.
    pub fn sample(&self) -> Vec<&str> {
        vec![
            &self.leaf,
            &self.mid,
            &self.top,
            &self.src,
            &self.exe,
            &self.tree,
            &self.split_out,
            &self.split_dev,
            &self.final_out,
            &self.final_drv,
            &self.split_drv,
            &self.unbuilt_drv,
        ]
    }
}

/// Writes the fixture inputs (expression, source tree) under `/e2e/fixture`.
pub fn write_inputs(ctx: &Ctx) -> Result<()> {
    ctx.write(FIXTURE_FILE, FIXTURE_NIX.as_bytes())?;
    ctx.write("/e2e/fixture/src/README", b"added with nix-store --add\n")?;
    ctx.write_script("/e2e/fixture/src/bin/hello", "#!/bin/sh\necho hello\n")?;
    ctx.write(
        "/e2e/fixture/src/share/deeper/still/données.txt",
        "non-ASCII: é ü ß 日本\n".as_bytes(),
    )?;
    let link = ctx.host("/e2e/fixture/src/link-to-bin");
    if !link.exists() {
        std::os::unix::fs::symlink("bin/hello", link)?;
    }
    Ok(())
}

fn find<'a>(paths: &'a [String], suffix: &str) -> Result<String> {
    let hits: Vec<&'a String> = paths.iter().filter(|p| p.ends_with(suffix)).collect();
    match hits.as_slice() {
        [one] => Ok(one.to_string()),
        _ => bail!("expected exactly one store path ending in {suffix:?}, found {hits:?}"),
    }
}

/// Builds the fixture with `fs`'s Nix and copies it to `/e2e/{name}`.
pub fn generate(ctx: &Ctx, fs: &Rootfs, name: &str) -> Result<Fixture> {
    write_inputs(ctx)?;
    let scratch = fs.host_path("/nix");
    clear_dir(&scratch)?;
    let script = format!(
        "src=$(nix-store --add /e2e/fixture/src)\n\
         drv=$(nix-instantiate {f} -A final)\n\
         out=$(nix-store --realise \"$drv\")\n\
         nix key generate-secret --key-name e2e-key-1 >/nix/e2e-key-1\n\
         nix key generate-secret --key-name e2e-key-2 >/nix/e2e-key-2\n\
         nix store sign --key-file /nix/e2e-key-1 --recursive \"$out\"\n\
         nix store sign --key-file /nix/e2e-key-2 \"$out\" \"$src\"\n\
         rm /nix/e2e-key-1 /nix/e2e-key-2\n\
         unbuilt=$(nix-instantiate {f} -A unbuilt)\n\
         ca_drv=$(nix-instantiate {f} -A ca)\n\
         ca_out=$(nix-store --realise \"$ca_drv\")\n\
         echo \"$src\"; echo \"$drv\"; echo \"$unbuilt\"; echo \"$ca_drv\"; echo \"$ca_out\"",
        f = shq(FIXTURE_FILE)
    );
    let out = fs.sh(&script)?.ok().context("building the fixture failed")?.stdout();
    let lines: Vec<&str> = out.lines().collect();
    let [src, final_drv, unbuilt_drv, ca_drv, ca_out] = lines.as_slice() else {
        bail!("unexpected fixture script output {out:?}")
    };
    let all = sorted_lines(&fs.ok(&[
        "nix-store",
        "--query",
        "--requisites",
        "--include-outputs",
        final_drv,
        src,
        unbuilt_drv,
        ca_drv,
        ca_out,
    ])?);
    let root = format!("/e2e/{name}");
    let dest = ctx.host(&root);
    std::fs::create_dir_all(&dest)?;
    crate::rootfs::host(
        "cp",
        [std::ffi::OsString::from("-a"), scratch.into(), dest.clone().into()],
    )?;
    clear_dir(&fs.host_path("/nix"))?;
    let fx = identify(root, &fs.label, all, [src, final_drv, unbuilt_drv, ca_drv, ca_out])?;
    check_copied(fs, &fx)?;
    Ok(fx)
}

/// The fixture's named paths: those the build script printed (`built`:
/// src, final drv, unbuilt drv, ca drv, ca output) and the others found by
/// name in `all`.
fn identify(root: String, made_by: &str, all: Vec<String>, built: [&str; 5]) -> Result<Fixture> {
    let [src, final_drv, unbuilt_drv, ca_drv, ca_out] = built;
    let drvs: Vec<String> = all.iter().filter(|p| p.ends_with(".drv")).cloned().collect();
    let outs: Vec<String> = all.iter().filter(|p| !p.ends_with(".drv")).cloned().collect();
    Ok(Fixture {
        root,
        made_by: made_by.to_string(),
        leaf: find(&outs, "-e2e-leaf")?,
        mid: find(&outs, "-e2e-mid")?,
        top: find(&outs, "-e2e-top")?,
        src: src.to_string(),
        exe: find(&outs, "-e2e-exe")?,
        tree: find(&outs, "-e2e-tree")?,
        split_out: find(&outs, "-e2e-split")?,
        split_dev: find(&outs, "-e2e-split-dev")?,
        final_out: find(&outs, "-e2e-final-1")?,
        final_drv: final_drv.to_string(),
        split_drv: find(&drvs, "-e2e-split.drv")?,
        tree_drv: find(&drvs, "-e2e-tree.drv")?,
        unbuilt_drv: unbuilt_drv.to_string(),
        ca_drv: ca_drv.to_string(),
        ca_out: ca_out.to_string(),
        all,
    })
}

/// Sanity: the copy is a complete local store that Nix agrees with.
fn check_copied(fs: &Rootfs, fx: &Fixture) -> Result<()> {
    let copied = sorted_lines(&fs.ok(&["nix", "path-info", "--store", &fx.local_url(), "--all"])?);
    if copied != fx.all {
        bail!("copied lower store lists {copied:?}, expected {:?}", fx.all);
    }
    Ok(())
}

/// The lines of `text`, sorted.
fn sorted_lines(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text.lines().map(str::to_string).collect();
    v.sort();
    v
}

/// Removes everything inside `dir` but keeps `dir` (a mount point).
pub fn clear_dir(dir: &std::path::Path) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() && !p.is_symlink() {
            make_writable(&p);
            std::fs::remove_dir_all(&p).with_context(|| format!("cannot remove {}", p.display()))?;
        } else {
            std::fs::remove_file(&p)?;
        }
    }
    Ok(())
}

/// Store directories are read-only; make a tree removable.
pub fn make_writable(p: &std::path::Path) {
    let _ = crate::rootfs::capture(std::process::Command::new("chmod").args(["-R", "u+w"]).arg(p));
}
