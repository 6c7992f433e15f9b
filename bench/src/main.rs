//! `snix-lower-store-bench`: snix-lower-store against Nix's own daemon on the
//! same generated lower store, driven by the same load through the crate's
//! protocol client. See `--help` and the README's "Performance" section.
//!
//! Runs as root: it re-executes itself in a private mount namespace, binds
//! its work directory, /proc and /dev into a Debian root file system with a
//! real Nix (`.ci/provision-nix-rootfs`) and runs Nix there with chroot.

use anyhow::Result;
use clap::Parser;

use crate::args::Args;
use crate::env::Env;
use crate::load::Mix;
use crate::modes::{compare, import, instructions, nar, print_machine, rss, startup};

mod args;
mod daemons;
mod env;
mod load;
mod modes;
mod qr;

const NS_MARKER: &str = "SNIX_LOWER_STORE_BENCH_IN_NAMESPACE";

fn main() {
    let args = Args::parse();
    testbed::namespace::enter_private(
        "snix-lower-store-bench",
        NS_MARKER,
        testbed::namespace::Pid::Shared,
        "chroot, mounts",
    );
    if let Err(e) = run(args) {
        eprintln!("snix-lower-store-bench: {e:#}");
        std::process::exit(1);
    }
}

/// Runs the one mode asked for (the default: the comparison).
fn run(args: Args) -> Result<()> {
    let mix = Mix::parse(&args.mix)?;
    let mut env = Env::new(&args)?;
    print_machine(&env);
    if let Some(n) = args.import_only {
        return import::mode_import(&env, &args, n);
    }
    if let Some(n) = args.startup {
        return startup::mode_startup(&env, &args, n);
    }
    if let Some(n) = args.image_sizes {
        return startup::mode_image_sizes(&env, &args, n);
    }
    if let Some(n) = args.rss {
        return rss::mode_rss(&env, &args, n, &mix);
    }
    if let Some(b) = args.nar_bytes {
        return nar::mode_nar(&env, b);
    }
    if let Some(n) = args.instructions {
        return instructions::mode_instructions(&mut env, &args, n);
    }
    compare::mode_compare(&mut env, &args, &mix)
}
