//! Applying a plan: the step loop, file transactions with rollback, the audit journal, and
//! the recovery at start of what a killed process left open.

pub mod execute;
pub mod journal;
pub mod pm2_step;
pub mod recover;
pub mod transaction;
