//! Castore digests of a lower-dir object: files hash to BLAKE3 of their
//! contents, directories to BLAKE3 of their encoded `Directory` message
//! (entries sorted by name within each list), as snix computes them. This is
//! what `PathInfo.entry` names, so snix tooling can address the object.

use prost::Message;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::proto::castore::{entry, Directory, DirectoryEntry, Entry, FileEntry, SymlinkEntry};

fn file_digest(path: &Path) -> io::Result<[u8; 32]> {
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finalize().into());
        }
        h.update(&buf[..n]);
    }
}

/// Digest and recursive size of the directory at `path`.
fn directory(path: &Path) -> io::Result<([u8; 32], u64)> {
    let mut dir = Directory::default();
    let mut size = 0u64;
    let mut names: Vec<_> = fs::read_dir(path)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        let child = path.join(&name);
        let name = name.as_bytes().to_vec();
        match node(&child, name)? {
            entry::Entry::Directory(d) => {
                size += 1 + d.size;
                dir.directories.push(d);
            }
            entry::Entry::File(f) => {
                size += 1;
                dir.files.push(f);
            }
            entry::Entry::Symlink(s) => {
                size += 1;
                dir.symlinks.push(s);
            }
        }
    }
    Ok((blake3::hash(&dir.encode_to_vec()).into(), size))
}

fn node(path: &Path, name: Vec<u8>) -> io::Result<entry::Entry> {
    let meta = fs::symlink_metadata(path)?;
    let ft = meta.file_type();
    Ok(if ft.is_symlink() {
        entry::Entry::Symlink(SymlinkEntry {
            name,
            target: fs::read_link(path)?.as_os_str().as_bytes().to_vec(),
        })
    } else if ft.is_file() {
        entry::Entry::File(FileEntry {
            name,
            digest: file_digest(path)?.to_vec(),
            size: meta.len(),
            executable: meta.permissions().mode() & 0o100 != 0,
        })
    } else if ft.is_dir() {
        let (digest, size) = directory(path)?;
        entry::Entry::Directory(DirectoryEntry {
            name,
            digest: digest.to_vec(),
            size,
        })
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("'{}' is not a file, directory or symlink", path.display()),
        ));
    })
}

/// The castore root entry of the object at `path`, named `name`.
pub(crate) fn root_entry(path: &Path, name: &str) -> io::Result<Entry> {
    Ok(Entry {
        entry: Some(node(path, name.as_bytes().to_vec())?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_and_directory_digests() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("f"), b"hello").unwrap();
        let e = root_entry(&d.path().join("f"), "x-f").unwrap();
        match e.entry.unwrap() {
            entry::Entry::File(f) => {
                assert_eq!(f.digest, blake3::hash(b"hello").as_bytes().to_vec());
                assert_eq!((f.size, f.executable, f.name), (5, false, b"x-f".to_vec()));
            }
            other => panic!("{other:?}"),
        }
        let root = d.path().join("o");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("sub/a"), b"a").unwrap();
        std::os::unix::fs::symlink("sub", root.join("l")).unwrap();
        let want_sub = Directory {
            files: vec![FileEntry {
                name: b"a".to_vec(),
                digest: blake3::hash(b"a").as_bytes().to_vec(),
                size: 1,
                executable: false,
            }],
            ..Default::default()
        };
        let want = Directory {
            directories: vec![DirectoryEntry {
                name: b"sub".to_vec(),
                digest: blake3::hash(&want_sub.encode_to_vec()).as_bytes().to_vec(),
                size: 1,
            }],
            symlinks: vec![SymlinkEntry {
                name: b"l".to_vec(),
                target: b"sub".to_vec(),
            }],
            ..Default::default()
        };
        match root_entry(&root, "x-o").unwrap().entry.unwrap() {
            entry::Entry::Directory(de) => {
                assert_eq!(de.digest, blake3::hash(&want.encode_to_vec()).as_bytes().to_vec());
                assert_eq!(de.size, 3);
            }
            other => panic!("{other:?}"),
        }
    }
}
