//! Moving delayed messages from one cascade to another without losing one.

pub mod classify;
pub mod headers;
pub mod ledger;
