//! Workers in milliseconds: a Python process that has imported `distributed`
//! once ([`SCRIPT`]) forks each `dask worker` on request, so a worker skips
//! the interpreter start and the import that make up most of a cold start.
//! Forked workers are not this process's children: they are process-group
//! leaders, signalled by group ([`ForkedWorker`]).

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;
use tracing::info;

const SCRIPT: &str = include_str!("forkserver.py");
const SCRIPT_FILE: &str = "dask_gateway_forkserver.py";
/// How long the server may take to import `distributed` and say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one fork may take to be answered.
const FORK_TIMEOUT: Duration = Duration::from_secs(10);

/// One worker to fork: what a cold `dask worker` would get as its working
/// directory, log file, environment and arguments.
#[derive(Debug, Serialize)]
pub struct ForkRequest<'a> {
    pub cwd: &'a Path,
    pub log: PathBuf,
    pub env: BTreeMap<String, String>,
    pub args: Vec<String>,
}

#[derive(Deserialize)]
struct Reply {
    pid: Option<i32>,
    error: Option<String>,
}

#[derive(Debug)]
pub struct ForkServer {
    /// Kept to kill the server with the gateway (kill on drop).
    _process: Child,
    /// One request at a time: the answer to a line is the next line.
    channel: Mutex<BufReader<UnixStream>>,
    /// Set when an exchange broke off (timeout, short write, I/O error): a
    /// late reply may still be in the socket, and read as the next caller's
    /// it would tie another cluster's worker to this pid. From then on every
    /// worker starts cold.
    out_of_step: AtomicBool,
}

impl ForkServer {
    /// Starts the server with `python` (the interpreter of the `dask`
    /// executable) and the clusters' default environment, and waits until
    /// it has imported `distributed`.
    pub async fn start(
        python: &Path,
        state_dir: &Path,
        environment: &BTreeMap<String, String>,
    ) -> std::io::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        // Made private from the start, like the clusters' directories under
        // it (`prepare`): whichever of the two gets here first creates it.
        tokio::fs::DirBuilder::new().recursive(true).mode(0o700).create(state_dir).await?;
        let script = state_dir.join(SCRIPT_FILE);
        tokio::fs::write(&script, SCRIPT).await?;
        tokio::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o600)).await?;
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        let inherited = theirs.as_raw_fd();
        let log = std::fs::File::create(state_dir.join("forkserver.log"))?;
        let mut cmd = Command::new(python);
        // `worker` in the command line: forked workers show it (they keep
        // their parent's), so `ps` and the tests see them as workers. The
        // server itself runs outside the state directory.
        cmd.arg(&script)
            .arg("worker")
            .current_dir("/")
            .envs(environment)
            .env("DASK_GATEWAY_FORKSERVER_FD", inherited.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        // SAFETY: prctl and fcntl are async-signal-safe: the server dies with
        // the gateway, and inherits its end of the pair and nothing else.
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)?;
                match nix::libc::fcntl(inherited, nix::libc::F_SETFD, 0) {
                    -1 => Err(std::io::Error::last_os_error()),
                    _ => Ok(()),
                }
            });
        }
        let process = cmd.spawn()?;
        drop(theirs);
        ours.set_nonblocking(true)?;
        let mut channel = BufReader::new(UnixStream::from_std(ours)?);
        let mut ready = String::new();
        match tokio::time::timeout(READY_TIMEOUT, channel.read_line(&mut ready)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(Err(e)) => return Err(e),
            _ => return Err(std::io::Error::other("the fork server did not start")),
        }
        info!(pid = process.id(), "worker fork server ready");
        Ok(Self {
            _process: process,
            channel: Mutex::new(channel),
            out_of_step: AtomicBool::new(false),
        })
    }

    /// Forks one worker; returns it once the fork happened.
    pub async fn fork(&self, request: &ForkRequest<'_>) -> std::io::Result<ForkedWorker> {
        let mut line = serde_json::to_vec(request)?;
        line.push(b'\n');
        let mut channel = self.channel.lock().await;
        if self.out_of_step.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("the fork server's channel is out of step"));
        }
        let answer = tokio::time::timeout(FORK_TIMEOUT, async {
            channel.get_mut().write_all(&line).await?;
            let mut reply = String::new();
            match channel.read_line(&mut reply).await? {
                0 => Err(std::io::Error::other("the fork server exited")),
                _ => Ok(reply),
            }
        })
        .await
        .map_err(|_| std::io::Error::other("the fork server did not answer"))
        .flatten()
        .inspect_err(|_| self.out_of_step.store(true, Ordering::Relaxed))?;
        let reply: Reply = serde_json::from_str(&answer)?;
        match (reply.pid, reply.error) {
            (Some(pid), _) if pid > 0 => Ok(ForkedWorker { pid }),
            (_, error) => Err(std::io::Error::other(error.unwrap_or_else(|| "no pid".into()))),
        }
    }
}

/// The Python interpreter that runs `dask`: the one in its `#!` line.
pub fn python_of(dask: &Path) -> Option<PathBuf> {
    let path = if dask.components().count() > 1 {
        dask.to_path_buf()
    } else {
        let dirs = std::env::var_os("PATH")?;
        std::env::split_paths(&dirs).map(|d| d.join(dask)).find(|p| p.is_file())?
    };
    let text = std::fs::read(&path).ok()?;
    let first = text.split(|b| *b == b'\n').next()?;
    let shebang = std::str::from_utf8(first.strip_prefix(b"#!")?).ok()?.trim();
    // `#!/usr/bin/env python3` has no interpreter path of its own.
    let interpreter = shebang.split_whitespace().next()?;
    (interpreter.contains("python") && Path::new(interpreter).is_file())
        .then(|| PathBuf::from(interpreter))
}

/// A worker process the fork server started: the leader of its own
/// process group, which is what gets signalled (its own children too). It
/// is not this process's child and nothing ends it on drop: it outlives
/// the gateway, like the cluster it belongs to.
#[derive(Debug)]
pub struct ForkedWorker {
    pub pid: i32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interpreter_comes_from_the_shebang() {
        let dir = std::env::temp_dir().join(format!("forkserver-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let python = dir.join("python3");
        std::fs::write(&python, "").unwrap();
        let dask = dir.join("dask");
        std::fs::write(&dask, format!("#!{}\nimport sys\n", python.display())).unwrap();
        assert_eq!(python_of(&dask), Some(python));
        std::fs::write(&dask, "#!/bin/sh\nexec true\n").unwrap();
        assert_eq!(python_of(&dask), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
