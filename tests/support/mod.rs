//! Helpers shared by the integration tests.

// Not every test uses every helper; the unused ones would otherwise warn per test.
#![allow(dead_code)]

pub mod lab;
pub mod nginx;
pub mod pm2;
pub mod system_box;
