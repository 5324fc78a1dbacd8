//! `nginx-medic playbooks check [DIR...]`: every error of every playbook and template, at once.

use super::Exit;
use crate::config::Settings;
use crate::playbook::check;
use std::path::PathBuf;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check playbooks (default: the configured dirs): YAML, schema, meaning, and templates
    /// rendered strictly against sample facts. Exit 0 when clean, 3 when anything is wrong.
    Check {
        /// Playbook dirs to check instead of the configured ones.
        dirs: Vec<PathBuf>,
        /// Template dirs for `render_site` (default: the configured ones).
        #[arg(long = "templates", value_name = "DIR")]
        templates: Vec<PathBuf>,
    },
}

pub fn run(settings: &Settings, command: &Command) -> anyhow::Result<Exit> {
    let Command::Check { dirs, templates } = command;
    let dirs = if dirs.is_empty() {
        &settings.playbooks
    } else {
        dirs
    };
    let templates = if templates.is_empty() {
        &settings.templates
    } else {
        templates
    };
    let errors = check(dirs, templates);
    if errors.is_empty() {
        let set =
            crate::playbook::load_dirs(dirs, templates).map_err(|e| anyhow::anyhow!("{e}"))?;
        println!("ok: {} playbook(s) valid", set.len());
        return Ok(Exit::Ok);
    }
    for e in &errors {
        eprintln!("error: {e}");
    }
    eprintln!("{} error(s) found", errors.len());
    Ok(Exit::InvalidInput)
}
