//! Applying a plan: file transactions with rollback and the audit journal of every step.

pub mod journal;
pub mod transaction;
