//! The only modules with side effects: /proc, systemd over D-Bus, the nginx binary.

pub mod nginx;
pub mod procfs;
pub mod systemd;
