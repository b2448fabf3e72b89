//! Leader election against the real API server (sim tier): an operator
//! stopped with SIGTERM gives its Lease back, so a waiting replica takes
//! over at once instead of after the lease's 15 s.

mod common;

use common::*;
use k8s_openapi::api::coordination::v1::Lease;

fn holder(lease: &Lease) -> Option<String> {
    lease.spec.as_ref()?.holder_identity.clone().filter(|h| !h.is_empty())
}

#[tokio::test]
#[ignore = "needs a control plane (tests/run)"]
async fn sigterm_releases_the_lease_and_the_standby_takes_over() {
    let world = World::new("leader").await;
    let leases = world.api::<Lease>();
    let args = |identity: &'static str| {
        [
            "--metrics-addr",
            "127.0.0.1:0",
            "--lease-name",
            "dask-operator-test",
            "--lease-namespace",
            world.ns(),
            "--pod-name",
            identity,
        ]
    };
    let mut first = Operator::start_with(world.ns(), &args("op-a"), &[]);
    eventually(30, "op-a holds the lease", || {
        let leases = leases.clone();
        async move { (holder(&leases.get("dask-operator-test").await.ok()?)? == "op-a").then_some(()) }
    })
    .await;
    let _standby = Operator::start_with(world.ns(), &args("op-b"), &[]);
    // The standby is up and sees the lease held (it cannot take it yet).
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let lease = leases.get("dask-operator-test").await.unwrap();
    assert_eq!(holder(&lease).as_deref(), Some("op-a"));

    let status = first.terminate();
    assert!(status.success(), "a SIGTERM is a clean exit: {status}");
    // Read as soon as op-a is gone, well inside its 15 s lease: released
    // (no holder) or already taken by the standby, never still op-a's.
    let lease = leases.get("dask-operator-test").await.unwrap();
    assert_ne!(holder(&lease).as_deref(), Some("op-a"), "the lease is released at exit");
    eventually(30, "op-b takes over", || {
        let leases = leases.clone();
        async move { (holder(&leases.get("dask-operator-test").await.ok()?)? == "op-b").then_some(()) }
    })
    .await;
}
