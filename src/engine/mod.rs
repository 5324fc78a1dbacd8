//! The pure core between facts and side effects: targets and their contexts, condition
//! evaluation, strict template rendering, findings and plans.

pub mod backend_context;
pub mod coherence;
pub mod conditions;
pub mod context;
pub mod describe;
pub mod dropin;
pub mod evaluate;
pub mod evidence;
pub mod plan;
pub mod pm2_plan;
pub mod preflight;
pub mod recency;
pub mod render;
pub mod reproduction;
pub mod sandbox;
pub mod unit_file;
