//! The facts snapshot: what nginx, the sockets, systemd and the error log say right now.
pub mod error_log;
