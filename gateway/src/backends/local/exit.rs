//! Why a cluster's `dask` process ended, in words for its user: how it
//! exited and the last lines of its log (where Python prints the traceback
//! of a crash at start), bounded so that a reason stays small.

use std::io::SeekFrom;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;

use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// At most this many lines of the log's end …
pub const TAIL_LINES: usize = 20;
/// … and at most this many bytes of it.
pub const TAIL_BYTES: u64 = 4096;

/// `what` ("the scheduler") exited: its status (when known: an adopted
/// process is no child of this one), then the log's tail.
pub fn describe_exit(what: &str, status: Option<&ExitStatus>, log_tail: &str) -> String {
    let Some(status) = status else {
        return with_tail(format!("{what} exited"), log_tail);
    };
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("{what} exited with status {code}"),
        (None, Some(signal)) => {
            let name = nix::sys::signal::Signal::try_from(signal)
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|_| format!("signal {signal}"));
            format!("{what} was killed by {name}")
        }
        (None, None) => format!("{what} exited ({status})"),
    };
    with_tail(how, log_tail)
}

fn with_tail(how: String, log_tail: &str) -> String {
    let tail = log_tail.trim_end();
    if tail.is_empty() { how } else { format!("{how}; the last lines of its log:\n{tail}") }
}

/// The last [`TAIL_LINES`] lines of the file at `path`, from its last
/// [`TAIL_BYTES`] bytes only (a line cut by that bound is dropped); empty if
/// it cannot be read.
pub async fn log_tail(path: &Path) -> String {
    read_tail(path).await.unwrap_or_default()
}

async fn read_tail(path: &Path) -> std::io::Result<String> {
    let mut file = tokio::fs::File::open(path).await?;
    let len = file.metadata().await?.len();
    let start = len.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(start)).await?;
    let mut bytes = Vec::with_capacity((len - start) as usize);
    file.take(TAIL_BYTES).read_to_end(&mut bytes).await?;
    Ok(last_lines(&String::from_utf8_lossy(&bytes), start > 0))
}

/// The last [`TAIL_LINES`] lines of `text`; without its first line when
/// `cut` (the bound fell inside it).
fn last_lines(text: &str, cut: bool) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    if cut && !lines.is_empty() {
        lines.remove(0);
    }
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_says_its_status_and_the_logs_end() {
        let failed = ExitStatus::from_raw(1 << 8);
        assert_eq!(
            describe_exit("the scheduler", Some(&failed), ""),
            "the scheduler exited with status 1"
        );
        let tail = "Traceback (most recent call last):\nImportError: nope\n";
        assert_eq!(
            describe_exit("the scheduler", Some(&failed), tail),
            "the scheduler exited with status 1; the last lines of its log:\nTraceback (most recent call last):\nImportError: nope"
        );
        let killed = ExitStatus::from_raw(9);
        assert_eq!(
            describe_exit("the scheduler", Some(&killed), ""),
            "the scheduler was killed by SIGKILL"
        );
        assert_eq!(
            describe_exit("the scheduler", None, "bye\n"),
            "the scheduler exited; the last lines of its log:\nbye",
            "an adopted scheduler's status is not known"
        );
    }

    #[tokio::test]
    async fn the_tail_is_bounded_in_lines_and_bytes() {
        let dir = std::env::temp_dir().join(format!("exit-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let short = dir.join("short.log");
        let text: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&short, text).unwrap();
        let tail = log_tail(&short).await;
        assert_eq!(tail.lines().count(), TAIL_LINES);
        assert!(tail.starts_with("line 11\n") && tail.ends_with("line 30"));

        let long = dir.join("long.log");
        std::fs::write(&long, format!("{}\nend\n", "x".repeat(100_000))).unwrap();
        assert_eq!(log_tail(&long).await, "end", "the cut line is dropped");
        assert_eq!(log_tail(&dir.join("missing.log")).await, "");
        std::fs::remove_dir_all(&dir).ok();
    }
}
