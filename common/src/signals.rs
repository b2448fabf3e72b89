//! How both binaries learn they should stop.

/// SIGINT (Ctrl-C) or SIGTERM (Kubernetes stopping the pod, systemd, `kill`):
/// the name of the one that came first.
pub async fn stop_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    })
}
