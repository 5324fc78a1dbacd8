//! The only modules with side effects: files, /proc, systemd over D-Bus, the nginx binary, HTTP
//! probes, backend logs.

pub mod backend_http;
pub mod child;
pub mod fs;
pub mod nginx;
pub mod pm2;
pub mod probe;
pub mod procfs;
pub mod sandbox;
pub mod sock_diag;
pub mod systemd;
pub mod unit_log;
