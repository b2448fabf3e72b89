//! How everything reaches a cluster's scheduler: the Service named after the
//! cluster, in front of the scheduler's two named ports.

use k8s_openapi::api::core::v1::ServiceSpec;

use crate::common::DaskScheduler;

/// The Service port (and container port) of the scheduler's Dask comm.
pub const COMM_PORT_NAME: &str = "tcp-comm";
/// The Service port of the scheduler's HTTP server: dashboard and `/api/v1`.
pub const DASHBOARD_PORT_NAME: &str = "http-dashboard";
pub const DEFAULT_COMM_PORT: i32 = 8786;
pub const DEFAULT_DASHBOARD_PORT: i32 = 8787;

/// The scheduler's Service (and Deployment): `<cluster>-scheduler`.
pub fn service_name(cluster: &str) -> String {
    format!("{cluster}-scheduler")
}

/// The Service's DNS name inside the Kubernetes cluster.
pub fn service_host(cluster: &str, namespace: &str, domain: &str) -> String {
    format!("{}.{namespace}.svc.{domain}", service_name(cluster))
}

fn service_port(service: &ServiceSpec, name: &str, default: i32) -> i32 {
    let ports = service.ports.as_deref().unwrap_or_default();
    ports.iter().find(|p| p.name.as_deref() == Some(name)).map(|p| p.port).unwrap_or(default)
}

impl DaskScheduler {
    /// Port of the Dask comm, from the Service (`tcp-comm`).
    pub fn comm_port(&self) -> i32 {
        service_port(&self.service, COMM_PORT_NAME, DEFAULT_COMM_PORT)
    }

    /// Port of the HTTP server, from the Service (`http-dashboard`).
    pub fn dashboard_port(&self) -> i32 {
        service_port(&self.service, DASHBOARD_PORT_NAME, DEFAULT_DASHBOARD_PORT)
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ServicePort;

    use super::*;

    #[test]
    fn ports_come_from_the_service_or_the_dask_defaults() {
        let mut scheduler = DaskScheduler::default();
        assert_eq!((scheduler.comm_port(), scheduler.dashboard_port()), (8786, 8787));
        scheduler.service.ports = Some(vec![ServicePort {
            name: Some(DASHBOARD_PORT_NAME.into()),
            port: 9000,
            ..Default::default()
        }]);
        assert_eq!((scheduler.comm_port(), scheduler.dashboard_port()), (8786, 9000));
        assert_eq!(service_host("c", "ns", "cluster.local"), "c-scheduler.ns.svc.cluster.local");
    }
}
