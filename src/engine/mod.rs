//! The pure core between facts and side effects: targets and their contexts, condition
//! evaluation, strict template rendering, findings and plans.

pub mod conditions;
pub mod context;
pub mod describe;
pub mod dropin;
pub mod evaluate;
pub mod plan;
pub mod preflight;
pub mod render;
pub mod sandbox;
