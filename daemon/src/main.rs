//! The `snix-lower-store` command line: serve, import, build-index, verify,
//! list, info, store-url, reconcile and demo. The entry point only: flags are
//! defined in `cli/flags.rs`, each subcommand runs in `cli/commands/`.
//! Every flag can also be set as `SNIX_LOWER_STORE_<FLAG>`.

use clap::Parser;
use std::process::ExitCode;

use cli::flags::{Cli, Cmd};

mod cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::logging::init_logging(&cli.log_level, cli.log_target);
    snix_lower_store::panics::install();
    let cmd = match cli.cmd {
        Cmd::Reconcile(args) => return cli::commands::reconcile::run(args),
        other => other,
    };
    match cli::commands::run(cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("snix-lower-store: {e:#}");
            ExitCode::FAILURE
        }
    }
}
