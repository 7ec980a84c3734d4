//! delaytopo as a library: the binary's parts, public so that integration
//! tests and benchmarks reuse the same naming and routing-key code.

pub mod amqp;
pub mod apply;
pub mod broker_identity;
pub mod capacity;
pub mod cascade;
pub mod cli;
pub mod commands;
pub mod context;
pub mod counted;
pub mod deprecations;
pub mod diff;
pub mod exit;
pub mod failover;
pub mod findings_view;
pub mod health;
pub mod interrupt;
pub mod lenient_json;
pub mod loss_guard;
pub mod mgmt;
pub mod moving;
pub mod observe;
pub mod permissions;
pub mod preflight;
pub mod progress;
pub mod report;
pub mod target;
#[cfg(test)]
mod test_fixtures;
pub mod tls;
pub mod topology;
pub mod versions;
