//! The shared store conformance suite run against the in-memory store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use roomkit_core::store::{MemoryStore, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_passes_the_conformance_suite() {
    let report = roomkit_testkit::conformance::run(|| async {
        Arc::new(MemoryStore::new()) as Arc<dyn Store>
    })
    .await;
    report.assert_all_passed();
    assert_eq!(
        report.passed().len(),
        roomkit_testkit::conformance::CHECKS.len()
    );
}

#[tokio::test]
async fn an_unknown_check_name_fails() {
    let outcome =
        roomkit_testkit::conformance::run_one("no_such_check", Arc::new(MemoryStore::new())).await;
    assert!(outcome.is_err());
}
