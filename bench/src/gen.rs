//! Generated lower stores: `n` text store objects whose paths are computed as
//! Nix computes `builtins.toFile` paths (so real Nix accepts them), with a
//! configurable reference graph, and their registration (`nix-store
//! --dump-db` format, what `nix-store --load-db` and our `import` read).
//!
//! Graph: node `j` references its children in a `fanout`-ary tree
//! (`j*fanout+1 ..= j*fanout+fanout`) plus `extra_refs` pseudo-random nodes
//! of higher index, so node 0's closure is the whole store and sharing is
//! realistic (most nodes have several referrers). Objects are written from
//! the highest index down, so every reference exists before its referrer.
//!
//! A generated store is cached under its parameters (a `.complete` marker),
//! so re-running a bench mode reuses it.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use snix_lower_store_index::import::{self, ImportOptions};
use snix_lower_store_testkit::demo::text_path;
use snix_lower_store_types::lower::LowerDir;
use snix_lower_store_types::{NarHash, StoreDir, StorePath};

#[derive(Clone, Debug)]
pub struct Spec {
    pub n: usize,
    pub fanout: usize,
    pub extra_refs: usize,
    /// Empty files (no data blocks: 1M of them cost only inodes).
    pub tiny: bool,
}

impl Spec {
    pub fn key(&self) -> String {
        format!(
            "n{}-f{}-x{}-{}",
            self.n,
            self.fanout,
            self.extra_refs,
            if self.tiny { "tiny" } else { "text" }
        )
    }
}

/// One generated lower store on disk.
pub struct Store {
    /// Root of the lower store: objects in `root/nix/store`, Nix's database
    /// (when loaded) in `root/nix/var/nix/db`.
    pub root: PathBuf,
    pub registration: PathBuf,
    /// Every path (full, `/nix/store/…`) with its NAR size, node 0 first.
    pub paths: Vec<(String, u64)>,
}

impl Store {
    pub fn store_dir(&self) -> PathBuf {
        self.root.join("nix/store")
    }
    /// Node 0, whose closure is the whole store.
    pub fn closure_root(&self) -> &str {
        &self.paths[0].0
    }
}

/// xorshift64*: deterministic, dependency-free.
pub struct Rng(pub u64);
impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

fn nar_str(h: &mut Sha256, s: &[u8]) -> u64 {
    h.update((s.len() as u64).to_le_bytes());
    h.update(s);
    let pad = snix_lower_store_protocol::wire::padding(s.len() as u64);
    h.update(&[0u8; 8][..pad]);
    8 + s.len() as u64 + pad as u64
}

/// NAR hash and size of a non-executable regular file with `contents`,
/// without touching the disk.
pub fn nar_of_file(contents: &[u8]) -> (NarHash, u64) {
    let mut h = Sha256::new();
    let mut size = 0;
    for s in [&b"nix-archive-1"[..], b"(", b"type", b"regular", b"contents"] {
        size += nar_str(&mut h, s);
    }
    size += nar_str(&mut h, contents);
    size += nar_str(&mut h, b")");
    (NarHash(h.finalize().into()), size)
}

pub fn write_registration_entry(
    w: &mut impl Write,
    sd: &StoreDir,
    p: &StorePath,
    hash: &NarHash,
    size: u64,
    refs: &[StorePath],
) -> std::io::Result<()> {
    writeln!(
        w,
        "{}\n{}\n{}\n\n{}",
        sd.display(p),
        hash.to_nix32_prefixed(),
        size,
        refs.len()
    )?;
    for r in refs {
        writeln!(w, "{}", sd.display(r))?;
    }
    Ok(())
}

/// A generated store of `n` tiny objects (fanout 4, 2 extra references)
/// under `dir`, imported into an index beside it; both made once and reused
/// (each behind a `.complete` marker). Returns the store's object dir, the
/// index's state dir and the store paths, in generation order: what the
/// criterion benches look paths up in.
pub fn indexed_tiny_store(dir: &Path, n: usize) -> Result<(PathBuf, PathBuf, Vec<StorePath>)> {
    let spec = Spec {
        n,
        fanout: 4,
        extra_refs: 2,
        tiny: true,
    };
    let store = generate(dir, &spec).context("generating the store")?;
    let state = dir.join(format!("{}-state", spec.key()));
    let sd = StoreDir::new("/nix/store").map_err(anyhow::Error::msg)?;
    if !state.join(".complete").exists() {
        let _ = fs::remove_dir_all(&state);
        fs::create_dir_all(&state)?;
        let text = fs::read_to_string(&store.registration)?;
        let batch = import::parse_registration(&text, &sd, "registration")?;
        let lower = LowerDir::open(&store.store_dir())?;
        import::import(&state, &sd, &lower, batch, ImportOptions::default())?;
        fs::write(state.join(".complete"), b"")?;
    }
    let paths = store.paths.iter().map(|(p, _)| sd.parse(p)).collect::<Result<_, _>>()?;
    Ok((store.store_dir(), state, paths))
}

/// Generate (or reuse) the store for `spec` under `dir`.
pub fn generate(dir: &Path, spec: &Spec) -> Result<Store> {
    let root = dir.join(spec.key());
    let registration = root.join("registration");
    if root.join(".complete").exists() {
        let paths = read_paths(&registration)?;
        if paths.len() != spec.n {
            bail!(
                "{} lists {} paths, expected {}",
                registration.display(),
                paths.len(),
                spec.n
            );
        }
        return Ok(Store {
            root,
            registration,
            paths,
        });
    }
    if spec.n == 0 {
        bail!("--paths must be at least 1");
    }
    if root.exists() {
        fs::remove_dir_all(&root).with_context(|| format!("removing the incomplete {}", root.display()))?;
    }
    let store = root.join("nix/store");
    fs::create_dir_all(&store)?;
    let sd = StoreDir::new("/nix/store").map_err(anyhow::Error::msg)?;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ spec.n as u64);
    let mut made: Vec<Option<StorePath>> = vec![None; spec.n];
    let mut sizes = vec![0u64; spec.n];
    let mut reg = BufWriter::with_capacity(1 << 20, fs::File::create(&registration)?);
    for j in (0..spec.n).rev() {
        let refs: Vec<StorePath> = node_refs(spec, j, &mut rng)
            .iter()
            .map(|&i| made[i].clone().expect("generated before"))
            .collect();
        let contents = node_contents(spec, j, &refs, &sd);
        let name = format!("bench-{j}");
        let p = text_path(&sd, &name, contents.as_bytes(), &refs);
        fs::write(store.join(p.base_name()), &contents)?;
        let (hash, size) = nar_of_file(contents.as_bytes());
        let mut sorted = refs.clone();
        sorted.sort();
        write_registration_entry(&mut reg, &sd, &p, &hash, size, &sorted)?;
        sizes[j] = size;
        made[j] = Some(p);
    }
    reg.flush()?;
    drop(reg);
    fs::write(root.join(".complete"), b"")?;
    let paths = made
        .into_iter()
        .zip(sizes)
        .map(|(p, s)| (sd.display(&p.expect("all made")), s))
        .collect();
    Ok(Store {
        root,
        registration,
        paths,
    })
}

/// The nodes node `j` refers to (all above `j`, so generated before it):
/// its children in the tree and `extra_refs` pseudo-random others, sorted,
/// without duplicates.
fn node_refs(spec: &Spec, j: usize, rng: &mut Rng) -> Vec<usize> {
    let mut idx: Vec<usize> = (1..=spec.fanout)
        .map(|c| j * spec.fanout + c)
        .filter(|&c| c < spec.n)
        .collect();
    if j + 1 < spec.n {
        for _ in 0..spec.extra_refs {
            idx.push(j + 1 + rng.below(spec.n - j - 1));
        }
    }
    idx.sort_unstable();
    idx.dedup();
    idx
}

/// Node `j`'s file: empty for a tiny store, else a line naming it and one
/// per reference (so the references are found in its contents).
fn node_contents(spec: &Spec, j: usize, refs: &[StorePath], sd: &StoreDir) -> String {
    if spec.tiny {
        return String::new();
    }
    let mut s = format!("bench object {j}\n");
    for r in refs {
        s.push_str("uses ");
        s.push_str(&sd.display(r));
        s.push('\n');
    }
    s
}

/// One store object of `size` bytes (a text object, so Nix accepts its path).
pub fn generate_big(dir: &Path, size: u64) -> Result<Store> {
    let root = dir.join(format!("big-{size}"));
    let registration = root.join("registration");
    if root.join(".complete").exists() {
        let paths = read_paths(&registration)?;
        return Ok(Store {
            root,
            registration,
            paths,
        });
    }
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    let store = root.join("nix/store");
    fs::create_dir_all(&store)?;
    let sd = StoreDir::new("/nix/store").map_err(anyhow::Error::msg)?;
    let mut contents = Vec::with_capacity(size as usize);
    let line = b"snix-lower-store bench: one large object, read through NarFromPath\n";
    let mut rng = Rng(42);
    while (contents.len() as u64) < size {
        let n = (size as usize - contents.len()).min(line.len());
        contents.extend_from_slice(&line[..n]);
        if contents.len() % 4096 < line.len() && (contents.len() as u64) < size {
            contents.push(b'0' + (rng.next_u64() % 10) as u8);
        }
    }
    let p = text_path(&sd, "bench-big", &contents, &[]);
    fs::write(store.join(p.base_name()), &contents)?;
    let (hash, nsize) = nar_of_file(&contents);
    drop(contents);
    let mut reg = BufWriter::new(fs::File::create(&registration)?);
    write_registration_entry(&mut reg, &sd, &p, &hash, nsize, &[])?;
    reg.flush()?;
    fs::write(root.join(".complete"), b"")?;
    Ok(Store {
        root,
        registration,
        paths: vec![(sd.display(&p), nsize)],
    })
}

/// Paths and NAR sizes of a registration file, in file order reversed
/// (the generator writes node 0 last).
pub fn read_paths(registration: &Path) -> Result<Vec<(String, u64)>> {
    let f = std::io::BufReader::with_capacity(1 << 20, fs::File::open(registration)?);
    let mut lines = f.lines();
    let mut out = Vec::new();
    while let Some(path) = lines.next() {
        let path = path?;
        if path.is_empty() {
            break;
        }
        let mut next = || -> Result<String> { lines.next().context("truncated registration")?.map_err(Into::into) };
        next()?;
        let size: u64 = next()?.parse()?;
        next()?;
        let n: usize = next()?.parse()?;
        for _ in 0..n {
            next()?;
        }
        out.push((path, size));
    }
    out.reverse();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nar_matches_the_daemon_serializer() {
        let d = std::env::temp_dir().join(format!("snix-bench-nar-{}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        for c in [&b""[..], b"x", b"hello world, eight+", &[7u8; 4096][..]] {
            let f = d.join("f");
            fs::write(&f, c).unwrap();
            assert_eq!(snix_lower_store_types::nar::nar_hash(&f).unwrap(), nar_of_file(c));
        }
        fs::remove_dir_all(&d).unwrap();
    }
}
