//! Runs a planned `pm2` step: one app restarted (`pm2 restart NAME`), or its edited ecosystem
//! entry applied (`pm2 startOrRestart ECOSYSTEM --only NAME --update-env`, then `pm2 save`),
//! with a clean environment, as the PM2 home's owner.

use crate::adapters::pm2::{Pm2, Pm2Cli, Pm2Target};
use crate::error_text::chain;
use crate::playbook::Pm2Op;
use std::path::{Path, PathBuf};

/// What one `pm2` step acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pm2Step {
    pub target: Pm2Target,
    pub app: String,
    pub op: Pm2Op,
    pub ecosystem: Option<PathBuf>,
}

/// Runs the step on a blocking thread (pm2 is a child process that may take seconds).
pub async fn run(step: Pm2Step) -> Result<String, String> {
    tokio::task::spawn_blocking(move || run_with(&Pm2Cli, &step))
        .await
        .map_err(|e| format!("the pm2 step did not run to its end: {e}"))?
}

/// Runs the step through `pm2`.
pub fn run_with(pm2: &dyn Pm2, step: &Pm2Step) -> Result<String, String> {
    match step.op {
        Pm2Op::Restart => pm2
            .restart(&step.target, &step.app)
            .map(|_| format!("pm2 restarted app `{}`", step.app))
            .map_err(|e| chain(&e)),
        Pm2Op::ApplyEcosystem => {
            let file = step
                .ecosystem
                .as_deref()
                .ok_or("no ecosystem file was planned")?;
            apply(pm2, step, file)
        }
    }
}

fn apply(pm2: &dyn Pm2, step: &Pm2Step, file: &Path) -> Result<String, String> {
    pm2.apply_ecosystem(&step.target, file, &step.app)
        .map(|_| {
            format!(
                "pm2 started app `{}` from `{}` with its new environment, and saved the process list",
                step.app,
                file.display()
            )
        })
        .map_err(|e| chain(&e))
}
