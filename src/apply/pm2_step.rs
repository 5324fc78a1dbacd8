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
        Pm2Op::Restart => {
            // idempotent: an app that is back online (restarted by someone else) is left alone
            let online = pm2
                .jlist(&step.target)
                .ok()
                .and_then(|text| crate::facts::pm2::parse_jlist(&text).ok())
                .and_then(|apps| apps.into_iter().find(|a| a.name == step.app))
                .filter(|a| a.status == "online" && a.pid > 0);
            if let Some(app) = online {
                return Ok(format!(
                    "app `{}` is online again (PID {}): not restarted",
                    app.name, app.pid
                ));
            }
            pm2.restart(&step.target, &step.app)
                .map(|_| format!("pm2 restarted app `{}`", step.app))
                .map_err(|e| chain(&e))
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::pm2::Pm2Error;
    use std::sync::Mutex;

    /// Records what it was asked; PM2 never runs.
    #[derive(Default)]
    struct Fake(Mutex<Vec<String>>);

    impl Pm2 for Fake {
        fn jlist(&self, _: &Pm2Target) -> Result<String, Pm2Error> {
            Ok("[]".into())
        }
        fn restart(&self, _: &Pm2Target, app: &str) -> Result<String, Pm2Error> {
            self.0.lock().unwrap().push(format!("restart {app}"));
            Ok(String::new())
        }
        fn apply_ecosystem(
            &self,
            _: &Pm2Target,
            ecosystem: &Path,
            app: &str,
        ) -> Result<String, Pm2Error> {
            self.0
                .lock()
                .unwrap()
                .push(format!("apply {} {app}", ecosystem.display()));
            Ok(String::new())
        }
    }

    fn step(op: Pm2Op, ecosystem: Option<&str>) -> Pm2Step {
        Pm2Step {
            target: Pm2Target {
                binary: "/usr/bin/pm2".into(),
                home: "/root/.pm2".into(),
                uid: 0,
                gid: 0,
            },
            app: "api".into(),
            op,
            ecosystem: ecosystem.map(PathBuf::from),
        }
    }

    #[test]
    fn an_app_online_again_is_not_restarted() {
        struct Online;
        impl Pm2 for Online {
            fn jlist(&self, _: &Pm2Target) -> Result<String, Pm2Error> {
                Ok(r#"[{"name":"api","pm_id":0,"pid":77,"pm2_env":{"status":"online"}}]"#.into())
            }
            fn restart(&self, _: &Pm2Target, _: &str) -> Result<String, Pm2Error> {
                panic!("restarted an online app")
            }
            fn apply_ecosystem(
                &self,
                _: &Pm2Target,
                _: &Path,
                _: &str,
            ) -> Result<String, Pm2Error> {
                panic!("not asked")
            }
        }
        let said = run_with(&Online, &step(Pm2Op::Restart, None)).unwrap();
        assert!(said.contains("not restarted"), "{said}");
    }

    #[test]
    fn a_restart_touches_only_that_app() {
        let fake = Fake::default();
        run_with(&fake, &step(Pm2Op::Restart, None)).unwrap();
        assert_eq!(*fake.0.lock().unwrap(), ["restart api"]);
    }

    #[test]
    fn the_ecosystem_is_applied_from_the_planned_file_or_not_at_all() {
        let fake = Fake::default();
        run_with(
            &fake,
            &step(Pm2Op::ApplyEcosystem, Some("/srv/eco.config.js")),
        )
        .unwrap();
        assert_eq!(*fake.0.lock().unwrap(), ["apply /srv/eco.config.js api"]);
        assert!(run_with(&fake, &step(Pm2Op::ApplyEcosystem, None)).is_err());
    }

    #[test]
    fn pm2_gets_a_clean_environment() {
        let env = crate::adapters::pm2::clean_env(&step(Pm2Op::Restart, None).target);
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["PATH", "HOME", "PM2_HOME", "LANG"]);
    }
}
