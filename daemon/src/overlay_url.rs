//! Building the `local-overlay://` store URL that points Nix at our socket.
//!
//! The lower store is `unix://<socket>?real=<lower dir>`: `real` is the
//! physical directory Nix's check-mount compares with the overlay's
//! `lowerdir=`. That URL is itself a query value of the outer URL, so it is
//! percent-encoded. [`Parsed::parse`] reads such a URL back (for
//! `reconcile`, which needs the upper database and upper layer Nix uses).

use std::path::{Path, PathBuf};

/// Percent-encode everything but RFC 3986 unreserved characters and '/'.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The parts of a `local-overlay://` store URL whose lower store is our
/// socket; [`OverlayUrl::render`] writes it as Nix parses it.
pub struct OverlayUrl<'a> {
    pub socket: &'a Path,
    pub lower_dir: &'a Path,
    pub upper_layer: &'a Path,
    pub state: Option<&'a Path>,
    pub root: Option<&'a Path>,
}

impl OverlayUrl<'_> {
    /// The lower store URL on its own (`unix://…?real=…`).
    pub fn lower_store(&self) -> String {
        format!(
            "unix://{}?real={}",
            self.socket.display(),
            encode(&self.lower_dir.display().to_string())
        )
    }

    pub fn render(&self) -> String {
        let mut q = Vec::new();
        if let Some(root) = self.root {
            q.push(format!("root={}", encode(&root.display().to_string())));
        }
        if let Some(state) = self.state {
            q.push(format!("state={}", encode(&state.display().to_string())));
        }
        q.push(format!("lower-store={}", encode(&self.lower_store())));
        q.push(format!(
            "upper-layer={}",
            encode(&self.upper_layer.display().to_string())
        ));
        q.push("check-mount=true".into());
        format!("local-overlay://?{}", q.join("&"))
    }
}

/// Decodes `%XX` escapes (and nothing else: Nix's query decoding does not
/// turn `+` into a space either).
pub fn decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape at byte {i} of '{s}'"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("'{s}' does not decode to UTF-8"))
}

/// What `reconcile` needs from a `local-overlay://` URL, with Nix's
/// defaults (`LocalFSStoreConfig`: `state` is `<root>/nix/var/nix` with a
/// `root`, else Nix's state dir, `NIX_STATE_DIR` or `/nix/var/nix`).
#[derive(Debug, PartialEq, Eq)]
pub struct Parsed {
    pub upper_layer: PathBuf,
    pub state: PathBuf,
    /// The `real` of a `unix://…?real=…` lower store: the lower dir.
    pub lower_real: Option<PathBuf>,
    /// The logical store dir (`store=`, default `/nix/store`).
    pub store_dir: String,
}

impl Parsed {
    /// Parses `local-overlay://?k=v&…` (only the query form this crate renders).
    pub fn parse(url: &str) -> Result<Parsed, String> {
        let rest = url
            .strip_prefix("local-overlay://")
            .ok_or_else(|| format!("store URL '{url}' is not a local-overlay:// URL"))?;
        let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
        if !authority.is_empty() {
            return Err(format!(
                "store URL '{url}': give the settings as query parameters (local-overlay://?upper-layer=…), \
                 not as '{authority}'"
            ));
        }
        let params = query_params(query)?;
        let get = |k: &str| params.iter().find(|(pk, _)| pk == k).map(|(_, v)| v.clone());
        let upper_layer =
            get("upper-layer").ok_or_else(|| format!("store URL '{url}' has no upper-layer= parameter"))?;
        let state = match (get("state"), get("root")) {
            (Some(s), _) => s,
            (None, Some(r)) => format!("{}/nix/var/nix", r.trim_end_matches('/')),
            (None, None) => std::env::var("NIX_STATE_DIR")
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "/nix/var/nix".into()),
        };
        let lower_real = match get("lower-store") {
            Some(l) => lower_real(&l)?,
            None => None,
        };
        Ok(Parsed {
            upper_layer: upper_layer.into(),
            state: state.into(),
            lower_real,
            store_dir: get("store").unwrap_or_else(|| "/nix/store".into()),
        })
    }

    /// Nix's upper database: `<state>/db/db.sqlite` (`LocalStore`'s `dbDir`).
    pub fn upper_db(&self) -> PathBuf {
        self.state.join("db").join("db.sqlite")
    }
}

fn query_params(query: &str) -> Result<Vec<(String, String)>, String> {
    query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

/// The `real=` of a `unix://` lower store URL, if it has one.
fn lower_real(lower: &str) -> Result<Option<PathBuf>, String> {
    // The last '?': a socket path is not always encoded in it.
    let Some((_, q)) = lower.rsplit_once('?') else {
        return Ok(None);
    };
    Ok(query_params(q)?
        .into_iter()
        .find(|(k, _)| k == "real")
        .map(|(_, v)| v.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reads_back_what_render_writes() {
        let u = OverlayUrl {
            socket: Path::new("/run/s?x/socket"),
            lower_dir: Path::new("/srv/lower store/nix/store"),
            upper_layer: Path::new("/var/lib/o%u/upper"),
            state: Some(Path::new("/var/lib/o/state")),
            root: None,
        };
        let p = Parsed::parse(&u.render()).unwrap();
        assert_eq!(p.upper_layer, Path::new("/var/lib/o%u/upper"));
        assert_eq!(p.upper_db(), Path::new("/var/lib/o/state/db/db.sqlite"));
        assert_eq!(p.lower_real.as_deref(), Some(Path::new("/srv/lower store/nix/store")));
        assert_eq!(p.store_dir, "/nix/store");
    }

    #[test]
    fn parse_defaults_state_from_root_like_nix() {
        let p = Parsed::parse("local-overlay://?root=/r/&upper-layer=/u&lower-store=local").unwrap();
        assert_eq!(p.state, Path::new("/r/nix/var/nix"));
        assert_eq!(p.lower_real, None);
        let e = Parsed::parse("local?root=/x").unwrap_err();
        assert!(e.contains("not a local-overlay://"), "{e}");
        let e = Parsed::parse("local-overlay://?state=/s").unwrap_err();
        assert!(e.contains("no upper-layer="), "{e}");
    }

    #[test]
    fn lower_store_url_is_encoded_inside_the_outer_url() {
        let u = OverlayUrl {
            socket: Path::new("/run/snix-lower-store/socket"),
            lower_dir: Path::new("/srv/lower store/nix/store"),
            upper_layer: Path::new("/var/lib/overlay/upper"),
            state: None,
            root: None,
        };
        assert_eq!(
            u.lower_store(),
            "unix:///run/snix-lower-store/socket?real=/srv/lower%20store/nix/store"
        );
        assert_eq!(
            u.render(),
            "local-overlay://?lower-store=unix%3A///run/snix-lower-store/socket%3Freal%3D/srv/lower%2520store/nix/store\
             &upper-layer=/var/lib/overlay/upper&check-mount=true"
        );
    }
}
