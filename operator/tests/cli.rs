//! The operator binary's command line and logs. No control plane needed: the
//! operator is pointed at an API server that is not there, which is enough
//! to start it, see it log, and see that failing watches are not silent.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A kubeconfig for an API server on a loopback port nobody listens on.
fn unreachable_kubeconfig(dir: &std::path::Path) -> std::path::PathBuf {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let path = dir.join(format!("kubeconfig-{}", uuid::Uuid::new_v4().simple()));
    let config = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
         clusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n\
         users: [{{name: u, user: {{token: t}}}}]\n\
         contexts: [{{name: c, context: {{cluster: c, user: u, namespace: cli}}}}]\n"
    );
    std::fs::write(&path, config).unwrap();
    path
}

fn operator(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dask-operator"));
    cmd.args(["--namespace", "cli", "--metrics-addr", "127.0.0.1:0"])
        .args(args)
        .env("KUBECONFIG", unreachable_kubeconfig(&std::env::temp_dir()))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("RUST_LOG", "info");
    cmd
}

/// Stdout lines (a pipe, not a terminal) until `done` says enough, or 20 s.
fn lines_until(mut child: Child, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !done(&lines) && std::time::Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            lines.push(line);
        }
    }
    child.kill().ok();
    child.wait().ok();
    lines
}

#[test]
fn text_logs_off_a_terminal_have_no_colour_codes_and_watch_failures_show() {
    let child = operator(&["--log-format", "text"]).stdout(Stdio::piped()).spawn().unwrap();
    let lines = lines_until(child, |lines| lines.iter().any(|l| l.contains("watch failed")));
    let all = lines.join("\n");
    assert!(all.contains("INFO") && all.contains("starting controllers"), "{all}");
    assert!(all.contains("WARN") && all.contains("watch failed"), "{all}");
    assert!(!all.contains('\x1b'), "ANSI escape codes in a piped log:\n{all:?}");
}

#[test]
fn json_logs_are_one_object_a_line() {
    let child = operator(&["--log-format", "json"]).stdout(Stdio::piped()).spawn().unwrap();
    let lines = lines_until(child, |lines| !lines.is_empty());
    let first: serde_json::Value = serde_json::from_str(&lines[0]).expect("a JSON log line");
    assert_eq!(first["fields"]["message"], "starting controllers", "{first}");
}

#[test]
fn an_unknown_log_format_is_refused_with_the_choices() {
    let out = operator(&["--log-format", "yaml"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("possible values: text, json"), "{stderr}");
}
