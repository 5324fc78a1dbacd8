//! The only modules with side effects: /proc, systemd over D-Bus, the nginx binary.

pub mod fs;
pub mod probe;
