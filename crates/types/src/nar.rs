//! NAR serialization of a store object in the lower directory.
//!
//! `NarWriter` walks a file system object and writes its canonical Nix archive:
//! directory entries in byte order, the executable bit from the owner's x bit,
//! symlinks as their target. It never follows a symlink (every file is opened
//! with `O_NOFOLLOW` after an `lstat`), so serving `NarFromPath` can never
//! read outside the store object it was asked for. Memory use is one copy
//! buffer, whatever the size of the object: as large as the largest file so
//! far, at most 256 KiB.

use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::NarHash;

const COPY_BUF: usize = 256 * 1024;

/// Zero bytes that follow a string of `len` bytes in a NAR and on the
/// worker protocol's wire (to the next multiple of 8). The one place the
/// padding rule is written; the protocol and the benches' generators use it.
pub fn padding(len: u64) -> usize {
    ((8 - (len % 8)) % 8) as usize
}

/// Writes the NAR of a lower-dir object into any `Write`.
pub struct NarWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
}

impl<W: Write> NarWriter<W> {
    pub fn new(out: W) -> Self {
        NarWriter { out, buf: Vec::new() }
    }

    pub fn into_inner(self) -> W {
        self.out
    }

    /// Serialize the object at `path` (not following it if it is a symlink).
    pub fn write_nar(&mut self, path: &Path) -> io::Result<()> {
        self.str(b"nix-archive-1")?;
        self.node(path)
    }

    fn str(&mut self, s: &[u8]) -> io::Result<()> {
        self.out.write_all(&(s.len() as u64).to_le_bytes())?;
        self.out.write_all(s)?;
        self.pad(s.len() as u64)
    }

    fn pad(&mut self, len: u64) -> io::Result<()> {
        let p = padding(len);
        self.out.write_all(&[0u8; 8][..p])
    }

    fn node(&mut self, path: &Path) -> io::Result<()> {
        let meta = fs::symlink_metadata(path)?;
        let ft = meta.file_type();
        self.str(b"(")?;
        if ft.is_symlink() {
            let target = fs::read_link(path)?;
            self.str(b"type")?;
            self.str(b"symlink")?;
            self.str(b"target")?;
            self.str(target.as_os_str().as_bytes())?;
        } else if ft.is_file() {
            self.str(b"type")?;
            self.str(b"regular")?;
            if meta.permissions().mode() & 0o100 != 0 {
                self.str(b"executable")?;
                self.str(b"")?;
            }
            self.str(b"contents")?;
            self.contents(path, meta.len())?;
        } else if ft.is_dir() {
            self.str(b"type")?;
            self.str(b"directory")?;
            let mut names: Vec<_> = fs::read_dir(path)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()?;
            names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            for name in names {
                self.str(b"entry")?;
                self.str(b"(")?;
                self.str(b"name")?;
                self.str(name.as_bytes())?;
                self.str(b"node")?;
                self.node(&path.join(&name))?;
                self.str(b")")?;
            }
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "'{}' is neither a regular file, a directory nor a symlink; a NAR cannot hold it",
                    path.display()
                ),
            ));
        }
        self.str(b")")
    }

    fn contents(&mut self, path: &Path, size: u64) -> io::Result<()> {
        let mut f: File = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        self.out.write_all(&size.to_le_bytes())?;
        // Grown to the largest file so far, at most COPY_BUF: most store
        // files are small, and zeroing 256 KiB for each NarFromPath of one
        // was most of its cost.
        let fits = size.min(COPY_BUF as u64) as usize;
        if self.buf.len() < fits {
            self.buf.resize(fits, 0);
        }
        let mut left = size;
        while left > 0 {
            let want = left.min(self.buf.len() as u64) as usize;
            let n = f.read(&mut self.buf[..want])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("'{}' shrank while it was being serialized", path.display()),
                ));
            }
            self.out.write_all(&self.buf[..n])?;
            left -= n as u64;
        }
        self.pad(size)
    }
}

/// A `Write` that hashes and counts what passes through it.
#[derive(Default)]
pub struct HashingSink {
    hasher: Sha256,
    size: u64,
}

impl HashingSink {
    pub fn finish(self) -> (NarHash, u64) {
        (NarHash(self.hasher.finalize().into()), self.size)
    }
}

impl Write for HashingSink {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.hasher.update(b);
        self.size += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// NAR hash and NAR size of the object at `path`.
pub fn nar_hash(path: &Path) -> io::Result<(NarHash, u64)> {
    let mut w = NarWriter::new(HashingSink::default());
    w.write_nar(path)?;
    Ok(w.into_inner().finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn nar_of(p: &Path) -> Vec<u8> {
        let mut w = NarWriter::new(Vec::new());
        w.write_nar(p).unwrap();
        w.into_inner()
    }

    fn s(out: &mut Vec<u8>, x: &[u8]) {
        out.extend_from_slice(&(x.len() as u64).to_le_bytes());
        out.extend_from_slice(x);
        out.resize(out.len() + padding(x.len() as u64), 0);
    }

    #[test]
    fn regular_file_layout() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        fs::write(&f, b"hello").unwrap();
        let mut want = Vec::new();
        for t in [
            &b"nix-archive-1"[..],
            b"(",
            b"type",
            b"regular",
            b"contents",
            b"hello",
            b")",
        ] {
            s(&mut want, t);
        }
        assert_eq!(nar_of(&f), want);
    }

    /// Files below, above and far above one copy buffer, in an order that
    /// makes the buffer grow and then be reused for smaller files.
    #[test]
    fn files_of_every_size_against_the_layout() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("o");
        fs::create_dir(&root).unwrap();
        let body = |n: usize, seed: u8| -> Vec<u8> { (0..n).map(|i| (i % 251) as u8 ^ seed).collect() };
        let files = [
            ("a", body(3, 1)),
            ("b", body(COPY_BUF * 2 + 17, 2)),
            ("c", body(10, 3)),
            ("d", body(COPY_BUF - 1, 4)),
            ("e", Vec::new()),
        ];
        for (name, data) in &files {
            fs::write(root.join(name), data).unwrap();
        }
        let mut want = Vec::new();
        for t in [&b"nix-archive-1"[..], b"(", b"type", b"directory"] {
            s(&mut want, t);
        }
        for (name, data) in &files {
            for t in [
                &b"entry"[..],
                b"(",
                b"name",
                name.as_bytes(),
                b"node",
                b"(",
                b"type",
                b"regular",
                b"contents",
            ] {
                s(&mut want, t);
            }
            s(&mut want, data);
            s(&mut want, b")");
            s(&mut want, b")");
        }
        s(&mut want, b")");
        assert_eq!(nar_of(&root), want);
    }

    #[test]
    fn directory_sorted_with_executable_and_symlink() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("o");
        fs::create_dir(&root).unwrap();
        fs::write(root.join("b"), b"").unwrap();
        fs::write(root.join("a"), b"x").unwrap();
        fs::set_permissions(root.join("a"), fs::Permissions::from_mode(0o755)).unwrap();
        symlink("../../etc/passwd", root.join("c")).unwrap();
        let mut want = Vec::new();
        for t in [&b"nix-archive-1"[..], b"(", b"type", b"directory"] {
            s(&mut want, t);
        }
        for t in [
            &b"entry"[..],
            b"(",
            b"name",
            b"a",
            b"node",
            b"(",
            b"type",
            b"regular",
            b"executable",
            b"",
            b"contents",
            b"x",
            b")",
            b")",
        ] {
            s(&mut want, t);
        }
        for t in [
            &b"entry"[..],
            b"(",
            b"name",
            b"b",
            b"node",
            b"(",
            b"type",
            b"regular",
            b"contents",
            b"",
            b")",
            b")",
        ] {
            s(&mut want, t);
        }
        // The symlink is serialized as its target, never followed.
        for t in [
            &b"entry"[..],
            b"(",
            b"name",
            b"c",
            b"node",
            b"(",
            b"type",
            b"symlink",
            b"target",
            b"../../etc/passwd",
            b")",
            b")",
        ] {
            s(&mut want, t);
        }
        s(&mut want, b")");
        assert_eq!(nar_of(&root), want);
        let (h, n) = nar_hash(&root).unwrap();
        assert_eq!(n, want.len() as u64);
        assert_eq!(h, NarHash(Sha256::digest(&want).into()));
    }
}
