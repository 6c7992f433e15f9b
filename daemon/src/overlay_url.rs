//! Building the `local-overlay://` store URL that points Nix at our socket.
//!
//! The lower store is `unix://<socket>?real=<lower dir>`: `real` is the
//! physical directory Nix's check-mount compares with the overlay's
//! `lowerdir=`. That URL is itself a query value of the outer URL, so it is
//! percent-encoded. [`Parsed::parse`] reads such a URL back (for
//! `reconcile`, which needs the upper database and upper layer Nix uses).
//!
//! Invariant: every path goes into a URL percent-encoded, the socket path
//! included: Nix (2.26 and 2.34 alike) percent-decodes the path of a
//! `unix://` store URL, and an unencoded `?`, `#` or `%` would end the path
//! or be decoded, and a space makes the URL unparsable. Paths are encoded
//! byte by byte (a non-UTF-8 path keeps its bytes); only the RFC 3986
//! unreserved characters and `/` stay as they are, as in
//! nixos-modules/store-url.nix, which must give the same URLs.
//!
//! Known limit (tests/nix-parse 5): Nix 2.34 decodes the nested
//! `lower-store=` value once and then the unix:// path, as encoded here;
//! Nix 2.26 decodes the value twice before parsing it, so a socket path or
//! lower dir that needs encoding cannot be named in a `local-overlay://` URL
//! that Nix 2.26 opens (the plain `unix://` URL works with both). No single
//! encoding suits both; [`OverlayUrl::nested_needs_encoding`] lets the CLI
//! say so.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Percent-encode everything but RFC 3986 unreserved characters and '/'.
pub fn encode(s: &str) -> String {
    encode_bytes(s.as_bytes())
}

/// [`encode`] of a path's bytes, exactly as they are.
pub(crate) fn encode_path(p: &Path) -> String {
    encode_bytes(p.as_os_str().as_bytes())
}

fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~/".contains(&b)
}

fn encode_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if is_plain(b) {
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
    /// The lower store URL on its own (`unix://…?real=…`), the socket path
    /// percent-encoded like every other path.
    pub fn lower_store(&self) -> String {
        format!(
            "unix://{}?real={}",
            encode_path(self.socket),
            encode_path(self.lower_dir)
        )
    }

    /// Whether the socket path or the lower dir, the two paths inside the
    /// nested lower store URL, hold a byte that must be percent-encoded
    /// (see the module header: Nix 2.26 cannot open such a URL).
    pub fn nested_needs_encoding(&self) -> bool {
        [self.socket, self.lower_dir]
            .iter()
            .any(|p| !p.as_os_str().as_bytes().iter().all(|&b| is_plain(b)))
    }

    pub fn render(&self) -> String {
        let mut q = Vec::new();
        if let Some(root) = self.root {
            q.push(format!("root={}", encode_path(root)));
        }
        if let Some(state) = self.state {
            q.push(format!("state={}", encode_path(state)));
        }
        q.push(format!("lower-store={}", encode(&self.lower_store())));
        q.push(format!("upper-layer={}", encode_path(self.upper_layer)));
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

    /// Decodes %XX as Nix's percentDecode does (for the test only).
    fn decode(s: &str) -> Vec<u8> {
        let b = s.as_bytes();
        let (mut out, mut i) = (Vec::new(), 0);
        while i < b.len() {
            if b[i] == b'%' {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        out
    }

    #[test]
    fn socket_path_with_url_syntax_is_encoded_and_decodes_back() {
        use std::ffi::OsStr;
        let socket = Path::new("/run/a b?c=d&e%f#g/so;ck");
        let u = OverlayUrl {
            socket,
            lower_dir: Path::new("/srv/l?w#r%/nix/store"),
            upper_layer: Path::new("/u"),
            state: None,
            root: None,
        };
        let lower = u.lower_store();
        assert_eq!(
            lower,
            "unix:///run/a%20b%3Fc%3Dd%26e%25f%23g/so%3Bck?real=/srv/l%3Fw%23r%25/nix/store"
        );
        // One '?' (the query), no '#', no space: the path ends where Nix
        // ends it, and decodes to the socket's bytes.
        assert_eq!(lower.matches('?').count(), 1);
        assert!(!lower.contains('#') && !lower.contains(' '));
        let path = lower.strip_prefix("unix://").unwrap().split('?').next().unwrap();
        assert_eq!(decode(path), socket.as_os_str().as_bytes());
        // Inside the outer URL: decoded once it is the lower store URL again.
        let outer = u.render();
        let value = outer.split("lower-store=").nth(1).unwrap().split('&').next().unwrap();
        assert_eq!(decode(value), lower.as_bytes());
        assert!(u.nested_needs_encoding());
        let plain = OverlayUrl {
            socket: Path::new("/run/snix-lower-store/socket"),
            lower_dir: Path::new("/srv/lower_1.x~/nix/store"),
            ..u
        };
        assert!(!plain.nested_needs_encoding());
        // A non-UTF-8 byte keeps its value.
        let odd = Path::new(OsStr::from_bytes(b"/run/\xff/s"));
        assert_eq!(encode_path(odd), "/run/%FF/s");
    }
}
