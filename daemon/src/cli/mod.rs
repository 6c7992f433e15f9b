//! The binary's command line, kept out of the library: the flag definitions
//! (`flags`), their execution (`commands`, one module per subcommand) and
//! logging set-up. Declared by main.rs only (`mod cli`), so nothing in the
//! library depends on it.

pub(crate) mod commands;
pub(crate) mod flags;
pub(crate) mod logging;
