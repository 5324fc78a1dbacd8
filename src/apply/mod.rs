//! Applying a plan: the step loop, file transactions with rollback, the audit journal.

pub mod journal;
pub mod transaction;
pub mod execute;
