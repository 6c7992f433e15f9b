//! Skipping an unframed NAR on the wire.
//!
//! Before protocol 1.25, AddToStore sends the NAR inline, with no length in
//! front. To refuse that op and keep the connection usable we must find where
//! the NAR ends, which means parsing it. The parser is iterative (no recursion
//! however deep the archive) and keeps nothing but the current depth.

use tokio::io::AsyncRead;

use super::wire::{Limits, ProtocolError, WireReader};

const MAX_TOKEN: u64 = 4096;

async fn token<R: AsyncRead + Unpin>(r: &mut WireReader<R>) -> Result<Vec<u8>, ProtocolError> {
    let saved = r.limits;
    r.limits = Limits {
        max_string: MAX_TOKEN,
        ..saved
    };
    let t = r.bytes("NAR token").await;
    r.limits = saved;
    t
}

async fn expect<R: AsyncRead + Unpin>(r: &mut WireReader<R>, want: &[u8]) -> Result<(), ProtocolError> {
    let got = token(r).await?;
    if got != want {
        return Err(ProtocolError::Malformed(format!(
            "malformed NAR: expected '{}', got '{}'",
            String::from_utf8_lossy(want),
            String::from_utf8_lossy(&got[..got.len().min(64)])
        )));
    }
    Ok(())
}

/// Read and discard one NAR. Returns the number of file content bytes skipped.
pub async fn skip_nar<R: AsyncRead + Unpin>(r: &mut WireReader<R>) -> Result<u64, ProtocolError> {
    expect(r, b"nix-archive-1").await?;
    let mut depth = 0u64;
    let mut content = 0u64;
    loop {
        // One node header.
        expect(r, b"(").await?;
        expect(r, b"type").await?;
        let mut complete = true;
        match token(r).await?.as_slice() {
            b"regular" => {
                let mut tag = token(r).await?;
                if tag == b"executable" {
                    expect(r, b"").await?;
                    tag = token(r).await?;
                }
                if tag != b"contents" {
                    return Err(ProtocolError::Malformed(
                        "malformed NAR: regular file without contents".into(),
                    ));
                }
                content += r.skip_string("NAR file contents").await?;
                expect(r, b")").await?;
            }
            b"symlink" => {
                expect(r, b"target").await?;
                token(r).await?;
                expect(r, b")").await?;
            }
            b"directory" => {
                depth += 1;
                complete = false;
            }
            other => {
                return Err(ProtocolError::Malformed(format!(
                    "malformed NAR: unknown node type '{}'",
                    String::from_utf8_lossy(&other[..other.len().min(64)])
                )))
            }
        }
        // Close finished nodes and entries until the next entry opens.
        loop {
            if complete {
                if depth == 0 {
                    return Ok(content);
                }
                expect(r, b")").await?; // closes the directory entry
            }
            match token(r).await?.as_slice() {
                b"entry" => {
                    expect(r, b"(").await?;
                    expect(r, b"name").await?;
                    token(r).await?;
                    expect(r, b"node").await?;
                    break;
                }
                b")" => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(content);
                    }
                    complete = true;
                }
                _ => {
                    return Err(ProtocolError::Malformed(
                        "malformed NAR: expected 'entry' or ')'".into(),
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use snix_lower_store_types::nar::NarWriter;
    use std::os::unix::fs::symlink;

    #[tokio::test]
    async fn skips_exactly_one_nar_written_by_our_writer() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("o");
        std::fs::create_dir_all(root.join("a/b/c")).unwrap();
        std::fs::write(root.join("a/b/c/f"), b"12345").unwrap();
        std::fs::write(root.join("x"), b"abc").unwrap();
        symlink("a", root.join("l")).unwrap();
        let mut w = NarWriter::new(Vec::new());
        w.write_nar(&root).unwrap();
        let mut bytes = w.into_inner();
        bytes.extend_from_slice(&7u64.to_le_bytes());
        let mut r = WireReader::new(std::io::Cursor::new(bytes), Limits::default());
        assert_eq!(skip_nar(&mut r).await.unwrap(), 8);
        assert_eq!(
            r.u64().await.unwrap(),
            7,
            "the word after the NAR is left for the next op"
        );
    }

    #[tokio::test]
    async fn rejects_a_truncated_or_bad_nar() {
        let mut w = NarWriter::new(Vec::new());
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), b"x").unwrap();
        w.write_nar(&d.path().join("f")).unwrap();
        let bytes = w.into_inner();
        let mut r = WireReader::new(
            std::io::Cursor::new(bytes[..bytes.len() - 8].to_vec()),
            Limits::default(),
        );
        assert!(skip_nar(&mut r).await.is_err());
        let mut r = WireReader::new(std::io::Cursor::new(vec![0xffu8; 64]), Limits::default());
        assert!(skip_nar(&mut r).await.is_err());
    }
}
