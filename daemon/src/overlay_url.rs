//! Building the `local-overlay://` store URL that points Nix at our socket.
//!
//! The lower store is `unix://<socket>?real=<lower dir>`: `real` is the
//! physical directory Nix's check-mount compares with the overlay's
//! `lowerdir=`. That URL is itself a query value of the outer URL, so it is
//! percent-encoded.

use std::path::Path;

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

#[cfg(test)]
mod tests {
    use super::*;

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
