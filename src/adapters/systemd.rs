//! systemd over D-Bus (zbus): unit facts and unit jobs, on the system or the user bus.

use crate::config::Bus;
use crate::facts::units::{EnvironmentFile, ExecCommand, UnitFacts};
use zbus::proxy::CacheProperties;
use zbus::zvariant::OwnedObjectPath;

/// A D-Bus or systemd failure.
#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error("cannot connect to the {bus} bus: {source}")]
    Connect {
        bus: &'static str,
        source: zbus::Error,
    },
    #[error(
        "systemd job `{op}` of `{unit}` ended with `{result}`\nhelp: see the unit's log for why"
    )]
    JobFailed {
        op: &'static str,
        unit: String,
        result: String,
    },
    #[error("systemd job `{op}` of `{unit}` did not finish within {seconds}s")]
    JobTimeout {
        op: &'static str,
        unit: String,
        seconds: u64,
    },
    #[error("systemd call `{call}` for `{unit}` failed: {source}")]
    Call {
        call: &'static str,
        unit: String,
        source: zbus::Error,
    },
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait Manager {
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    #[allow(clippy::type_complexity)]
    fn list_units_by_patterns(
        &self,
        states: &[&str],
        patterns: &[&str],
    ) -> zbus::Result<
        Vec<(
            String,
            String,
            String,
            String,
            String,
            String,
            OwnedObjectPath,
            u32,
            String,
            OwnedObjectPath,
        )>,
    >;
    fn list_unit_files_by_patterns(
        &self,
        states: &[&str],
        patterns: &[&str],
    ) -> zbus::Result<Vec<(String, String)>>;
    fn subscribe(&self) -> zbus::Result<()>;
    fn reload(&self) -> zbus::Result<()>;
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn reload_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: OwnedObjectPath,
        unit: String,
        result: String,
    ) -> zbus::Result<()>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1"
)]
trait Unit {
    #[zbus(property)]
    fn load_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn sub_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn fragment_path(&self) -> zbus::Result<String>;
    #[zbus(property, name = "ActiveEnterTimestamp")]
    fn active_enter_timestamp(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn drop_in_paths(&self) -> zbus::Result<Vec<String>>;
}

/// `ExecStart` entries: path, argv, ignore-failure, four timestamps, pid, exit code, status.
type ExecStartEntry = (String, Vec<String>, bool, u64, u64, u64, u64, u32, i32, i32);

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Service",
    default_service = "org.freedesktop.systemd1"
)]
trait Service {
    #[zbus(property)]
    fn result(&self) -> zbus::Result<String>;
    #[zbus(property, name = "MainPID")]
    fn main_pid(&self) -> zbus::Result<u32>;
    #[zbus(property, name = "NRestarts")]
    fn n_restarts(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn exec_start(&self) -> zbus::Result<Vec<ExecStartEntry>>;
    #[zbus(property)]
    fn environment_files(&self) -> zbus::Result<Vec<(String, bool)>>;
    #[zbus(property)]
    fn environment(&self) -> zbus::Result<Vec<String>>;
    #[zbus(property)]
    fn control_group(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn exec_main_code(&self) -> zbus::Result<i32>;
    #[zbus(property)]
    fn exec_main_status(&self) -> zbus::Result<i32>;
    #[zbus(property)]
    fn exec_main_start_timestamp(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn exec_main_exit_timestamp(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn restart(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn standard_output(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn standard_error(&self) -> zbus::Result<String>;
}

/// A unit job nginx-medic may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOp {
    Start,
    Restart,
    Reload,
}

impl JobOp {
    fn name(self) -> &'static str {
        match self {
            Self::Start => "StartUnit",
            Self::Restart => "RestartUnit",
            Self::Reload => "ReloadUnit",
        }
    }
}

/// A connection to one systemd manager.
pub struct Systemd {
    conn: zbus::Connection,
}

impl Systemd {
    /// Connects to the system bus or to the session bus of the caller's user manager
    /// (`DBUS_SESSION_BUS_ADDRESS`).
    pub async fn connect(bus: Bus) -> Result<Self, SystemdError> {
        let (name, conn) = match bus {
            Bus::System => ("system", zbus::Connection::system().await),
            Bus::User => ("user", zbus::Connection::session().await),
        };
        let conn = conn.map_err(|source| SystemdError::Connect { bus: name, source })?;
        Ok(Self { conn })
    }

    async fn manager(&self) -> zbus::Result<ManagerProxy<'static>> {
        ManagerProxy::builder(&self.conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await
    }

    /// Reads the facts of one unit, loading it if the manager has unloaded it (a stopped unit
    /// that nothing references is unloaded, but still has a unit file).
    pub async fn unit(&self, name: &str) -> Result<UnitFacts, SystemdError> {
        let call = |call: &'static str| {
            let unit = name.to_string();
            move |source| SystemdError::Call { call, unit, source }
        };
        let path = self
            .manager()
            .await
            .map_err(call("Manager"))?
            .load_unit(name)
            .await
            .map_err(call("LoadUnit"))?;
        let unit = UnitProxy::builder(&self.conn)
            .path(path.clone())
            .map_err(call("Unit"))?
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(call("Unit"))?;
        let mut facts = UnitFacts {
            name: name.to_string(),
            load_state: unit.load_state().await.map_err(call("LoadState"))?,
            active_state: unit.active_state().await.map_err(call("ActiveState"))?,
            sub_state: unit.sub_state().await.map_err(call("SubState"))?,
            fragment_path: unit.fragment_path().await.ok().filter(|p| !p.is_empty()),
            active_enter_timestamp: unit.active_enter_timestamp().await.unwrap_or(0),
            result: None,
            main_pid: 0,
            n_restarts: None,
            exec_start: Vec::new(),
            environment_files: Vec::new(),
            environment: Vec::new(),
            control_group: None,
            run: Default::default(),
        };
        facts.run.drop_in_paths = unit.drop_in_paths().await.unwrap_or_default();
        if name.ends_with(".service") && facts.load_state == "loaded" {
            self.add_service_facts(path, &mut facts)
                .await
                .map_err(call("Service"))?;
        }
        Ok(facts)
    }

    async fn add_service_facts(
        &self,
        path: OwnedObjectPath,
        facts: &mut UnitFacts,
    ) -> zbus::Result<()> {
        let service = ServiceProxy::builder(&self.conn)
            .path(path)?
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        facts.result = Some(service.result().await?);
        facts.main_pid = service.main_pid().await?;
        facts.n_restarts = service.n_restarts().await.ok();
        facts.exec_start = service
            .exec_start()
            .await?
            .into_iter()
            .map(|(path, argv, ignore_failure, ..)| ExecCommand {
                path,
                argv,
                ignore_failure,
            })
            .collect();
        facts.environment_files = service
            .environment_files()
            .await?
            .into_iter()
            .map(|(path, optional)| EnvironmentFile {
                vars: read_env_file(&path),
                path,
                optional,
            })
            .collect();
        facts.environment = service.environment().await?;
        facts.control_group = service.control_group().await.ok().filter(|c| !c.is_empty());
        // Run facts are best effort: an older manager may lack one of them.
        let run = &mut facts.run;
        run.exec_main_code = service.exec_main_code().await.unwrap_or(0);
        run.exec_main_status = service.exec_main_status().await.unwrap_or(0);
        run.exec_main_start_timestamp = service.exec_main_start_timestamp().await.unwrap_or(0);
        run.exec_main_exit_timestamp = service.exec_main_exit_timestamp().await.unwrap_or(0);
        run.restart = service.restart().await.unwrap_or_default();
        run.standard_output = service.standard_output().await.unwrap_or_default();
        run.standard_error = service.standard_error().await.unwrap_or_default();
        Ok(())
    }

    /// Runs a job on a unit (mode `replace`) and waits until systemd reports it finished.
    pub async fn run_job(
        &self,
        unit: &str,
        op: JobOp,
        timeout: std::time::Duration,
    ) -> Result<(), SystemdError> {
        use futures_lite::StreamExt;
        let call = |call: &'static str| {
            let unit = unit.to_string();
            move |source| SystemdError::Call { call, unit, source }
        };
        let manager = self.manager().await.map_err(call("Manager"))?;
        manager.subscribe().await.map_err(call("Subscribe"))?;
        // Listen before asking, so the JobRemoved signal cannot slip past.
        let mut removed = manager
            .receive_job_removed()
            .await
            .map_err(call("JobRemoved"))?;
        let job = match op {
            JobOp::Start => manager.start_unit(unit, "replace").await,
            JobOp::Restart => manager.restart_unit(unit, "replace").await,
            JobOp::Reload => manager.reload_unit(unit, "replace").await,
        }
        .map_err(call(op.name()))?;
        // A restart is one job: systemd is stopping the unit, or starting it again, now.
        crate::failpoint::fail_point!("systemd.job-queued");
        let wait = async {
            while let Some(signal) = removed.next().await {
                let Ok(args) = signal.args() else { continue };
                if args.job == job {
                    return Some(args.result);
                }
            }
            None
        };
        let result = tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| SystemdError::JobTimeout {
                op: op.name(),
                unit: unit.to_string(),
                seconds: timeout.as_secs(),
            })?
            .unwrap_or_else(|| "disconnected".into());
        if result == "done" {
            Ok(())
        } else {
            Err(SystemdError::JobFailed {
                op: op.name(),
                unit: unit.to_string(),
                result,
            })
        }
    }

    /// `daemon-reload`: the manager rereads every unit file and drop-in.
    pub async fn daemon_reload(&self) -> Result<(), SystemdError> {
        let call = |call: &'static str| {
            move |source| SystemdError::Call {
                call,
                unit: "*".into(),
                source,
            }
        };
        let manager = self.manager().await.map_err(call("Manager"))?;
        manager.reload().await.map_err(call("Reload"))
    }

    /// The names of every service the manager knows: loaded units and installed unit files.
    pub async fn service_names(&self) -> Result<Vec<String>, SystemdError> {
        let call = |call: &'static str| {
            move |source| SystemdError::Call {
                call,
                unit: "*.service".into(),
                source,
            }
        };
        let manager = self.manager().await.map_err(call("Manager"))?;
        let mut names: Vec<String> = manager
            .list_units_by_patterns(&[], &["*.service"])
            .await
            .map_err(call("ListUnitsByPatterns"))?
            .into_iter()
            .map(|u| u.0)
            .collect();
        let files = manager
            .list_unit_files_by_patterns(&[], &["*.service"])
            .await
            .map_err(call("ListUnitFilesByPatterns"))?;
        names.extend(files.into_iter().filter_map(|(path, state)| {
            let name = path.rsplit('/').next()?.to_string();
            // Template units (`x@.service`) cannot be loaded without an instance name.
            (!name.contains("@.") && state != "masked").then_some(name)
        }));
        names.sort();
        names.dedup();
        Ok(names)
    }
}

/// Reads an environment file as systemd would; an unreadable file gives no variables.
fn read_env_file(path: &str) -> std::collections::BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .map(|text| {
            crate::facts::mapping::parse_env_file(&text)
                .into_iter()
                .collect()
        })
        .unwrap_or_default()
}

/// A change systemd announced about one unit (see [`Systemd::unit_signals`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitSignal {
    /// A job for the unit was queued (`JobNew`).
    JobNew { unit: String },
    /// A job for the unit finished with `result` (`JobRemoved`).
    JobRemoved { unit: String, result: String },
    /// The unit's `ActiveState` changed (`PropertiesChanged` on its object).
    ActiveState { unit: String, state: String },
}

impl Systemd {
    /// Subscribes to the manager's signals and yields every unit job and `ActiveState` change,
    /// for every unit: the caller picks the units it watches. The stream ends when the bus
    /// connection does.
    pub async fn unit_signals(
        &self,
    ) -> Result<impl futures_lite::Stream<Item = UnitSignal> + Unpin, SystemdError> {
        use futures_lite::StreamExt;
        let call = |call: &'static str| {
            move |source| SystemdError::Call {
                call,
                unit: "*".into(),
                source,
            }
        };
        let rule = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .path_namespace("/org/freedesktop/systemd1")
            .map_err(|e| call("AddMatch")(e))?
            .build();
        // Listen before subscribing, so nothing emitted in between is lost.
        let stream = zbus::MessageStream::for_match_rule(rule, &self.conn, Some(256))
            .await
            .map_err(call("AddMatch"))?;
        self.manager()
            .await
            .map_err(call("Manager"))?
            .subscribe()
            .await
            .map_err(call("Subscribe"))?;
        Ok(stream.filter_map(|message| message.ok().and_then(|m| unit_signal(&m))))
    }
}

fn unit_signal(message: &zbus::Message) -> Option<UnitSignal> {
    let header = message.header();
    let interface = header.interface()?.as_str();
    let member = header.member()?.as_str();
    match (interface, member) {
        ("org.freedesktop.systemd1.Manager", "JobNew") => {
            let (_, _, unit): (u32, OwnedObjectPath, String) = message.body().deserialize().ok()?;
            Some(UnitSignal::JobNew { unit })
        }
        ("org.freedesktop.systemd1.Manager", "JobRemoved") => {
            let (_, _, unit, result): (u32, OwnedObjectPath, String, String) =
                message.body().deserialize().ok()?;
            Some(UnitSignal::JobRemoved { unit, result })
        }
        ("org.freedesktop.DBus.Properties", "PropertiesChanged") => {
            let (changed_interface, changed, _): (
                String,
                std::collections::HashMap<String, zbus::zvariant::OwnedValue>,
                Vec<String>,
            ) = message.body().deserialize().ok()?;
            if changed_interface != "org.freedesktop.systemd1.Unit" {
                return None;
            }
            let state = String::try_from(changed.get("ActiveState")?.try_clone().ok()?).ok()?;
            let unit = unit_name_of_path(header.path()?.as_str())?;
            Some(UnitSignal::ActiveState { unit, state })
        }
        _ => None,
    }
}

/// `/org/freedesktop/systemd1/unit/api_2eservice` → `api.service` (systemd escapes every byte
/// outside `[A-Za-z0-9]` of a unit name as `_xx`).
fn unit_name_of_path(path: &str) -> Option<String> {
    let escaped = path.strip_prefix("/org/freedesktop/systemd1/unit/")?;
    let mut bytes = Vec::with_capacity(escaped.len());
    let mut rest = escaped.as_bytes();
    while let Some((&b, after)) = rest.split_first() {
        if b == b'_' {
            let hex = std::str::from_utf8(after.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = after.get(2..)?;
        } else {
            bytes.push(b);
            rest = after;
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_paths_unescape() {
        assert_eq!(
            unit_name_of_path("/org/freedesktop/systemd1/unit/api_2eservice").as_deref(),
            Some("api.service")
        );
        assert_eq!(
            unit_name_of_path("/org/freedesktop/systemd1/unit/php8_2e2_2dfpm_2eservice").as_deref(),
            Some("php8.2-fpm.service")
        );
        assert_eq!(
            unit_name_of_path("/org/freedesktop/systemd1/unit/_31foo_2eservice").as_deref(),
            Some("1foo.service")
        );
        assert_eq!(
            unit_name_of_path("/org/freedesktop/systemd1/unit/bad_2"),
            None
        );
        assert_eq!(unit_name_of_path("/org/freedesktop/systemd1"), None);
    }
}
