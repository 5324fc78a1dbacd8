//! nginx-medic's integration tests, one binary (`cargo test --test integration`).

mod box_crash;
mod box_heal;
mod box_lifecycle;
mod box_service;
mod box_watchdog;
mod cli;
mod lab_aim;
mod lab_captured;
mod lab_causes_nginx;
mod lab_causes_socket;
mod lab_coherence;
mod lab_daemon;
mod lab_evidence;
mod lab_facts;
mod lab_forgery;
mod lab_heal;
mod lab_hostile;
mod lab_pm2;
mod lab_reproduce;
mod lab_smoke;
mod nginx_dump;
mod support;
