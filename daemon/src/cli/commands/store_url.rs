//! `store-url`: the local-overlay:// URL with our socket as the lower store
//! (with a note when Nix 2.26 could not open it).

use anyhow::Result;
use std::process::ExitCode;

use snix_lower_store::overlay_url::OverlayUrl;

use crate::cli::flags::StoreUrlArgs;

/// `store-url`: prints the local-overlay:// URL.
pub(crate) fn run(args: StoreUrlArgs) -> Result<ExitCode> {
    let url = OverlayUrl {
        socket: &args.socket,
        lower_dir: &args.lower_dir,
        upper_layer: &args.upper_layer,
        state: args.state.as_deref(),
        root: args.root.as_deref(),
    };
    if url.nested_needs_encoding() {
        eprintln!(
            "store-url: note: the socket path or lower dir holds characters that are percent-encoded; \
             Nix 2.34 opens this URL, Nix 2.26 decodes lower-store= twice and does not. \
             Paths of letters, digits, '-', '.', '_', '~' and '/' work with every Nix."
        );
    }
    println!("{}", url.render());
    Ok(ExitCode::SUCCESS)
}
