//! A cluster's processes as process groups that outlive the gateway: each
//! scheduler and each worker leads its own group (the worker's holds its
//! nanny's worker process too), so stopping one signals the group, and a
//! restarted gateway can find and stop a group it did not start.
//!
//! A pid alone can be reused once its process is gone: a [`ProcessId`] is
//! the pid with the process's start time (in clock ticks since boot, from
//! `/proc/<pid>/stat`), and only a process with both counts as the same.

use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// How long a group has between SIGTERM and SIGKILL.
pub const TERMINATE_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessId {
    pub pid: i32,
    /// Start time in clock ticks since boot.
    pub start: u64,
}

/// The fields of `/proc/<pid>/stat` that matter here.
#[derive(Debug, PartialEq)]
struct Stat {
    state: char,
    pgrp: i32,
    start: u64,
}

/// Parses `/proc/<pid>/stat`: the command name (2nd field) is in
/// parentheses and may hold spaces and parentheses, so fields are counted
/// from its last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, pgrp 5, starttime 22 (1-based).
    Some(Stat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

fn stat(pid: i32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

impl ProcessId {
    /// The process `pid` as it is now; `None` if there is none.
    pub fn of(pid: i32) -> Option<Self> {
        Some(Self { pid, start: stat(pid)?.start })
    }

    /// Whether this very process still runs (a zombie does not).
    pub fn is_alive(&self) -> bool {
        stat(self.pid).is_some_and(|s| s.start == self.start && !matches!(s.state, 'Z' | 'X'))
    }

    /// Live processes of the group this process leads, itself included,
    /// even once the leader is gone: members are the processes with its
    /// pid as process group that started no earlier than it (an older one
    /// cannot be a member of a group made later).
    pub fn group_members(&self) -> Vec<i32> {
        let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                stat(*pid).is_some_and(|s| {
                    s.pgrp == self.pid && s.start >= self.start && !matches!(s.state, 'Z' | 'X')
                })
            })
            .collect()
    }

    /// Sends `signal` to the group: to the group id while its leader is
    /// this process (one atomic kill), else to each member found.
    pub fn signal_group(&self, signal: Signal) {
        if self.is_alive() {
            killpg(Pid::from_raw(self.pid), signal).ok();
        } else {
            for pid in self.group_members() {
                kill(Pid::from_raw(pid), signal).ok();
            }
        }
    }

    /// SIGTERM to the group, SIGKILL to what is left after `grace`.
    pub async fn stop_group(self, grace: Duration) {
        self.signal_group(Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + grace;
        while !self.group_members().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.signal_group(Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_end_of_the_name() {
        let line =
            "1234 (dask (worker) x) S 1 1230 1230 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 3 0 98765 0 0";
        assert_eq!(parse_stat(line), Some(Stat { state: 'S', pgrp: 1230, start: 98765 }));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[tokio::test]
    async fn a_group_is_found_and_stopped_even_after_its_leader_exits() {
        // A leader that starts a child in its group, then exits.
        let mut leader = std::process::Command::new("sh");
        std::os::unix::process::CommandExt::process_group(&mut leader, 0);
        let mut leader = leader
            .args(["-c", "sleep 60 >/dev/null 2>&1 & echo $!"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let id = ProcessId::of(leader.id() as i32).unwrap();
        let output = {
            use std::io::Read;
            let mut s = String::new();
            leader.stdout.take().unwrap().read_to_string(&mut s).unwrap();
            s
        };
        leader.wait().unwrap();
        let child: i32 = output.trim().parse().unwrap();
        assert!(!id.is_alive(), "the leader has exited and been reaped");
        assert_eq!(id.group_members(), vec![child]);
        id.stop_group(Duration::from_secs(2)).await;
        assert!(id.group_members().is_empty());
    }
}
