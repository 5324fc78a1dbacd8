//! The pure core between facts and side effects: condition evaluation and strict template rendering.

pub mod conditions;
pub mod render;
