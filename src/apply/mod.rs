//! Applying a plan: the step loop, file transactions with rollback, the audit journal.

pub mod execute;
pub mod journal;
pub mod pm2_step;
pub mod transaction;
