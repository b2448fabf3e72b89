//! Environment variables of the Dask processes that the operator and the
//! gateway set in the pods they make.

/// The scheduler's address, in every worker and job runner container.
pub const SCHEDULER_ADDRESS: &str = "DASK_SCHEDULER_ADDRESS";
/// A worker's name: its pod's, so the operator finds the pod's worker.
pub const WORKER_NAME: &str = "DASK_WORKER_NAME";
/// The scheduler's HTTP routes (set to [`SCHEDULER_HTTP_ROUTES`]).
pub const SCHEDULER_HTTP_ROUTES_VAR: &str = "DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES";

/// The scheduler's HTTP routes, including `distributed.http.scheduler.api`
/// (not in distributed's defaults), so the operator can retire workers and read
/// the adaptive target and idleness over plain HTTP instead of Dask RPC.
pub const SCHEDULER_HTTP_ROUTES: &str = r#"["distributed.http.scheduler.prometheus","distributed.http.scheduler.info","distributed.http.scheduler.json","distributed.http.health","distributed.http.proxy","distributed.http.statics","distributed.http.scheduler.api"]"#;

/// Encrypted comms for a scheduler and its workers that share one
/// certificate, which is also the CA (as dask-gateway's clusters do): the
/// `DASK_DISTRIBUTED__COMM__*` variables and their values.
pub fn tls(cert_file: &str, key_file: &str) -> [(&'static str, String); 6] {
    [
        ("DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION", "True".into()),
        ("DASK_DISTRIBUTED__COMM__TLS__CA_FILE", cert_file.into()),
        ("DASK_DISTRIBUTED__COMM__TLS__SCHEDULER__CERT", cert_file.into()),
        ("DASK_DISTRIBUTED__COMM__TLS__SCHEDULER__KEY", key_file.into()),
        ("DASK_DISTRIBUTED__COMM__TLS__WORKER__CERT", cert_file.into()),
        ("DASK_DISTRIBUTED__COMM__TLS__WORKER__KEY", key_file.into()),
    ]
}
