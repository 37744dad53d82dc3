//! `rampart`: parse the command line, run the role, turn the outcome into an exit code.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = rampart::cli::Cli::parse();
    match rampart::roles::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rampart: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
