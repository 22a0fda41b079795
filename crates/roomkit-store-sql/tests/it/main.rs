//! Integration tests of the SQL stores: the shared conformance suite on
//! SQLite and PostgreSQL, durability across reopen and SIGKILL, concurrent
//! writers, cross-process room locks, and two engine processes sharing a
//! PostgreSQL database.
//!
//! PostgreSQL tests read `ROOMKIT_TEST_POSTGRES_URL` and say that they were
//! skipped when it is not set (they fail instead under `ROOMKIT_TEST_REQUIRE_ALL`,
//! which the README's test command sets). Tests that need another process re-run this
//! test binary with `ROOMKIT_TEST_CHILD` set; see `child`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod child;
mod common;
mod conformance;
mod disk_full;
mod durability;
mod postgres;

/// The entry point of helper processes: a no-op in a normal test run.
#[test]
fn child_entry() {
    child::main_if_child();
}
