//! nginx-medic: finds out why Nginx answers 502/504 and heals it.
//!
//! The data flows `facts` → `playbook`/`engine` → `plan` → `apply`, one library API in
//! [`pipeline`]; the modules with side effects live in `adapters`, so everything between them
//! is plain data and pure functions. `cli` and `daemon` are shells over `pipeline`.

pub mod adapters;
pub mod apply;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod error_text;
pub mod facts;
pub mod failpoint;
pub mod nginx_conf;
pub mod pipeline;
pub mod playbook;
pub mod redact;
pub mod state_file;
