//! Integration tests: one binary, one module per area.

mod nginx_dump;
