//! Checking path infos against the lower dir: every path present, and with
//! `check_content` its NAR hash and size as recorded. Shared by the `verify`
//! subcommand and the VerifyStore op, whatever the backend.

use snix_lower_store_types::lower::LowerDir;
use snix_lower_store_types::progress::Progress;
use snix_lower_store_types::{NarHash, StoreDir, StorePath};

/// One line per problem, naming the path; empty when all is well.
pub fn verify(
    entries: &[(StorePath, NarHash, u64)],
    lower: &LowerDir,
    sd: &StoreDir,
    check_content: bool,
) -> Vec<String> {
    verify_reporting(entries, lower, sd, check_content, &Progress::default())
}

/// [`verify`], telling `progress` how many entries are checked.
pub fn verify_reporting(
    entries: &[(StorePath, NarHash, u64)],
    lower: &LowerDir,
    sd: &StoreDir,
    check_content: bool,
    progress: &Progress,
) -> Vec<String> {
    let mut problems = Vec::new();
    let what = if check_content { "hashing" } else { "checking" };
    progress.phase(what, Some(entries.len() as u64));
    for (path, hash, size) in entries {
        progress.inc(1);
        let shown = sd.display(path);
        if let Err(why) = lower.check_present(path) {
            problems.push(format!("path '{shown}' is indexed but {why}"));
            continue;
        }
        if check_content {
            match lower.content_mismatch(path, *hash, *size) {
                Ok(None) => {}
                Ok(Some((h, s))) => problems.push(format!(
                    "path '{shown}' was modified! expected hash '{}' size {size}, got '{}' size {s}",
                    hash.to_nix32_prefixed(),
                    h.to_nix32_prefixed()
                )),
                Err(e) => problems.push(format!("path '{shown}' cannot be read: {e}")),
            }
        }
    }
    problems
}
