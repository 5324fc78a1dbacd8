//! The `nginx-medic` command: parse arguments, set up logging, run, exit with a meaningful code.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = nginx_medic::cli::Cli::parse();
    let logs = nginx_medic::cli::init_tracing(&cli);
    match nginx_medic::cli::run(cli) {
        Ok(code) => code.into(),
        Err(e) => {
            logs.fatal(&e);
            nginx_medic::cli::Exit::from_error(&e).into()
        }
    }
}
