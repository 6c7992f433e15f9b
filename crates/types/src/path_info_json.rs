//! The path infos of `nix path-info --json` (format 1, with store paths, and
//! format 2, with base names and structured content addresses; an object
//! keyed by path or the legacy array) read into [`PathInfo`]s.
//!
//! Invariant: every field is validated as any input (store paths, NAR hash,
//! content address, signatures); an error names the entry and what is wrong.

use base64::Engine as _;
use serde_json::Value;

use crate::content_address::ContentAddress;
use crate::hash::nix32_encode;
use crate::path::shown;
use crate::path_info::{PathInfo, Signature};
use crate::{NarHash, StoreDir, StorePath};

/// Render a `--json-format 2` content address object as the wire string.
fn ca_from_v2(v: &Value) -> Result<String, String> {
    let method = v.get("method").and_then(Value::as_str).ok_or("ca.method missing")?;
    let hash = v.get("hash").and_then(Value::as_str).ok_or("ca.hash missing")?;
    let (algo, b64) = hash
        .split_once('-')
        .ok_or_else(|| format!("ca.hash '{}' is not an SRI hash", shown(hash)))?;
    let hash = shown(hash);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| format!("ca.hash '{hash}' is not base64"))?;
    let want = crate::hash::digest_len(algo).ok_or_else(|| format!("ca.hash '{hash}': unknown hash algorithm"))?;
    if bytes.len() != want {
        return Err(format!("ca.hash '{hash}' has {} bytes, {algo} has {want}", bytes.len()));
    }
    let prefix = match method {
        "text" => "text:",
        "flat" => "fixed:",
        "nar" => "fixed:r:",
        "git" => "fixed:git:",
        m => return Err(format!("unknown content address method '{}'", shown(m))),
    };
    Ok(format!("{prefix}{algo}:{}", nix32_encode(&bytes)))
}

/// What is wrong with a path-info JSON document: the entry (1-based; 0 for
/// the document as a whole) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entry {entry}: {why}")]
pub struct JsonError {
    pub entry: usize,
    pub why: String,
}

/// Parse `nix path-info --json` output (format 1 or 2, object or legacy array).
pub fn parse(text: &str, sd: &StoreDir) -> Result<Vec<PathInfo>, JsonError> {
    let whole = |why: String| JsonError { entry: 0, why };
    let root: Value = serde_json::from_str(text).map_err(|e| whole(format!("not JSON: {e}")))?;
    let (entries, v2) = json_entries(&root).ok_or_else(|| whole("expected a JSON object or array".into()))?;
    let mut out = Vec::new();
    for (i, (key, v)) in entries.into_iter().enumerate() {
        let at = |why: String| JsonError { entry: i + 1, why };
        out.push(parse_json_entry(sd, key, v, v2).map_err(at)?);
    }
    Ok(out)
}

/// Path-info JSON entries, each with its key if the document has keys.
type JsonEntries<'a> = Vec<(Option<String>, &'a Value)>;

/// The entries of a path-info JSON document, each with its key (none in the
/// legacy array), and whether the document is format 2. `None` if the root
/// is neither an object nor an array.
fn json_entries(root: &Value) -> Option<(JsonEntries<'_>, bool)> {
    // Format 2 wraps the map: {"version": 2, "info": {...}}.
    Some(match root {
        Value::Object(o) if o.get("info").is_some_and(Value::is_object) => (
            o["info"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (Some(k.clone()), v))
                .collect(),
            true,
        ),
        Value::Object(o) => (o.iter().map(|(k, v)| (Some(k.clone()), v)).collect(), false),
        Value::Array(a) => (a.iter().map(|v| (None, v)).collect(), false),
        _ => return None,
    })
}

/// One entry of a path-info JSON document; the error is what is wrong with it
/// (the caller names the source and the entry).
fn parse_json_entry(sd: &StoreDir, key: Option<String>, v: &Value, v2: bool) -> Result<PathInfo, String> {
    if v.is_null() {
        return Err(format!(
            "{} is not valid in the store it was queried from",
            shown(&key.unwrap_or_default())
        ));
    }
    let obj = v.as_object().ok_or("entry is not an object")?;
    let entry_v2 = v2 || obj.get("version").and_then(Value::as_u64) == Some(2);
    let parse_path = |s: &str| {
        if entry_v2 && !s.starts_with('/') {
            StorePath::from_base_name(s)
        } else {
            sd.parse(s)
        }
    };
    let key = key
        .or_else(|| obj.get("path").and_then(Value::as_str).map(str::to_owned))
        .ok_or("entry has no path")?;
    let path = parse_path(&key).map_err(|e| e.to_string())?;
    let key = shown(&key);
    if let Some(dir) = obj.get("storeDir").and_then(Value::as_str) {
        if dir != sd.as_str() {
            return Err(format!(
                "{key} is from store directory '{}', not '{}'",
                shown(dir),
                sd.as_str()
            ));
        }
    }
    let hash_s = obj
        .get("narHash")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{key} has no narHash string"))?;
    let nar_hash = NarHash::parse(hash_s).map_err(|e| e.to_string())?;
    let nar_size = obj
        .get("narSize")
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("{key} has no narSize"))?;
    let mut references = Vec::new();
    for r in obj
        .get("references")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{key} has no references list"))?
    {
        let r = r.as_str().ok_or("reference is not a string")?;
        references.push(parse_path(r).map_err(|e| e.to_string())?);
    }
    let deriver = match obj.get("deriver") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(parse_path(s).map_err(|e| e.to_string())?),
        Some(_) => return Err("deriver is not a string".into()),
    };
    let ca = match obj.get("ca") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(ContentAddress::parse_quoted(s).map_err(|e| format!("{key}: {e}"))?),
        Some(o @ Value::Object(_)) => {
            Some(ContentAddress::parse_quoted(&ca_from_v2(o)?).map_err(|e| format!("{key}: {e}"))?)
        }
        Some(_) => return Err("ca is neither a string nor an object".into()),
    };
    let sigs = obj
        .get("signatures")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(Signature::parse).collect())
        .transpose()
        .map_err(|e| format!("{key}: {e}"))?
        .unwrap_or_default();
    Ok(PathInfo {
        references,
        deriver,
        registration_time: obj.get("registrationTime").and_then(Value::as_u64).unwrap_or(0),
        ultimate: obj.get("ultimate").and_then(Value::as_bool).unwrap_or(false),
        sigs,
        ca,
        ..PathInfo::new(path, nar_hash, nar_size)
    })
}
