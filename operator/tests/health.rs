//! `/healthz` notices a stalled watch and recovers (sim tier). The shared API
//! server is never paused: the operator reaches it through a TCP proxy of
//! this test's own, which the test freezes (no byte moves, on any of its
//! connections, old or new), exactly as a dead connection or a frozen API
//! server looks to this operator alone.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use dask_crds::DaskCluster;
use kube::config::Kubeconfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A TCP proxy to `upstream` whose traffic the test can stop and restart.
struct FreezableProxy {
    addr: SocketAddr,
    frozen: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl FreezableProxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (frozen, _) = watch::channel(false);
        let gate = frozen.subscribe();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else { continue };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pump(client_read, server_write, gate.clone()));
                tokio::spawn(pump(server_read, client_write, gate.clone()));
            }
        });
        Self { addr, frozen, task }
    }

    fn freeze(&self, frozen: bool) {
        self.frozen.send_replace(frozen);
    }
}

impl Drop for FreezableProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to`, holding every chunk while the gate says frozen.
async fn pump(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if frozen.wait_for(|f| !f).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// host:port of the API server of the test's kubeconfig.
fn api_server_address() -> String {
    let config = Kubeconfig::read().unwrap();
    let cluster = config.clusters[0].cluster.as_ref().unwrap();
    let server: http::Uri = cluster.server.clone().unwrap().parse().unwrap();
    server.authority().unwrap().to_string()
}

/// The test's kubeconfig, its API server replaced by `proxy`.
fn kubeconfig_through(proxy: SocketAddr, ns: &str) -> std::path::PathBuf {
    let mut config = Kubeconfig::read().unwrap();
    for cluster in &mut config.clusters {
        // The certificate names 127.0.0.1, whatever the port.
        cluster.cluster.as_mut().unwrap().server = Some(format!("https://{proxy}"));
    }
    let path = std::env::temp_dir().join(format!("kubeconfig-{ns}-proxied"));
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
    path
}

async fn healthz(port: u16) -> Option<(u16, String)> {
    let url = format!("http://127.0.0.1:{port}/healthz");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().ok()?;
    let response = client.get(url).send().await.ok()?;
    Some((response.status().as_u16(), response.text().await.ok()?))
}

#[tokio::test]
#[ignore = "needs a control plane (tests/run)"]
async fn healthz_fails_while_the_watches_are_stalled_and_recovers() {
    let w = World::new("op-health").await;
    let proxy = FreezableProxy::start(api_server_address()).await;
    let kubeconfig = kubeconfig_through(proxy.addr, w.ns());
    let port = free_port();
    let metrics = format!("127.0.0.1:{port}");
    let _operator = Operator::start_with(
        w.ns(),
        &["--metrics-addr", &metrics, "--watch-stall-timeout", "6"],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );
    // Working through the proxy: a cluster reconciles, and the operator is healthy.
    w.create(&cluster("h", 1, 8786, 8787)).await;
    w.wait_workers("h", 1).await;
    eventually(30, "a healthy operator", || async {
        (healthz(port).await?.0 == 200).then_some(())
    })
    .await;
    // Quiet watches stay healthy past the bound (bookmarks and re-watches are progress).
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(healthz(port).await.map(|h| h.0), Some(200));

    proxy.freeze(true);
    // Each watch is re-issued on its own clock, so they cross the bound one
    // after another (up to a third of it apart): the DaskCluster watches too.
    let (_, body) = eventually(30, "/healthz to fail on the stalled DaskCluster watch", || async {
        healthz(port).await.filter(|(status, body)| *status == 503 && body.contains("daskclusters"))
    })
    .await;
    assert!(body.contains("no watch progress"), "{body}");

    proxy.freeze(false);
    eventually(60, "/healthz to recover once the watches move again", || async {
        (healthz(port).await?.0 == 200).then_some(())
    })
    .await;
    // And the operator still works: a scale reaches the pods.
    w.scale::<DaskCluster>("h", 2).await;
    w.wait_workers("h", 2).await;
    std::fs::remove_file(kubeconfig).ok();
}
