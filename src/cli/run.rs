//! `nginx-medic run`: the unattended daemon (see `crate::daemon`). It loads the playbooks up
//! front, so an invalid set stops it before it starts (exit 3), then runs until SIGTERM.

use super::diagnose::playbooks;
use super::Exit;
use crate::config::Settings;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(
    settings: Settings,
    config: Option<PathBuf>,
    _args: &Args,
) -> anyhow::Result<Exit> {
    let playbooks = playbooks(&settings)?;
    crate::daemon::run(config, settings, playbooks).await?;
    Ok(Exit::Ok)
}
