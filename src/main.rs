//! `switchyard` binary: parse the command line and run.

use clap::Parser;

/// mimalloc: the gateway allocates many small, short-lived buffers per request.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    switchyard::cli::run(switchyard::cli::Cli::parse())
}
