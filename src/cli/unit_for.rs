//! `nginx-medic unit-for UPSTREAM`: the ready systemd unit for a backend that no supervisor
//! runs (started by hand), on stdout, to install as is.

use super::diagnose::diagnose;
use super::Exit;
use crate::config::Settings;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The upstream: the address nginx dials (`127.0.0.1:8000`), a pass target as written, or
    /// a site name.
    #[arg(value_name = "UPSTREAM")]
    upstream: String,
}

pub async fn run(settings: &Settings, args: &Args) -> anyhow::Result<Exit> {
    let d = diagnose(settings).await?;
    let wanted = args.upstream.trim_start_matches("http://");
    let matching: Vec<_> = d
        .targets
        .iter()
        .filter(|t| {
            t.endpoint.address == wanted || t.route.target == wanted || t.route.site == wanted
        })
        .collect();
    if matching.is_empty() {
        anyhow::bail!(
            "no upstream `{}` is dialled by nginx\n  help: name the address nginx dials (`127.0.0.1:8000`), as `nginx-medic explain` shows it",
            args.upstream
        );
    }
    let Some(unit) = matching.iter().find_map(|t| {
        t.context
            .unsupervised
            .as_ref()
            .map(|u| u.unit_file.as_str())
    }) else {
        anyhow::bail!(
            "no process that no supervisor runs is known for `{}`: it is a systemd unit's or a PM2 app's, or nothing was seen listening there\n  help: a backend started by hand is remembered once `nginx-medic run` has seen it listen",
            args.upstream
        );
    };
    print!("{unit}");
    Ok(Exit::Ok)
}
