//! The shared store conformance suite on both SQL backends.

use std::sync::Arc;

use roomkit_core::store::Store;

use crate::common::{Target, TempDir, pg_url};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_passes_the_conformance_suite() {
    let dir = TempDir::new();
    let counter = std::sync::atomic::AtomicUsize::new(0);
    let report = roomkit_testkit::conformance::run(|| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let target = Target::sqlite(&dir, &format!("c{n}.db"));
        async move { target.open().await.store as Arc<dyn Store> }
    })
    .await;
    report.assert_all_passed();
    assert_eq!(
        report.passed().len(),
        roomkit_testkit::conformance::CHECKS.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_the_conformance_suite() {
    let Some(url) = pg_url("postgres_passes_the_conformance_suite") else {
        return;
    };
    let report = roomkit_testkit::conformance::run(|| {
        let target = Target::postgres(&url);
        async move { target.open().await.store as Arc<dyn Store> }
    })
    .await;
    report.assert_all_passed();
    assert_eq!(
        report.passed().len(),
        roomkit_testkit::conformance::CHECKS.len()
    );
}
