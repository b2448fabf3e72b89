//! A cluster's recent log lines, bounded: `GET /api/v1/clusters/<name>/logs`
//! asks a backend for the tail of each process's log (scheduler first, then
//! the workers) as a stream of [`LogSection`]s, so a big cluster's answer is
//! sent one process at a time and never held whole.

use std::collections::BTreeMap;
use std::io::SeekFrom;
use std::path::Path;

use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Lines per process when `?lines` is not given.
pub const DEFAULT_LINES: usize = 100;
/// The most lines per process a request gets (`?lines` is capped to it).
pub const MAX_LINES: usize = 1000;
/// The most bytes read from one process's log.
pub const MAX_BYTES_PER_LOG: usize = 64 * 1024;
/// The most bytes of log lines in one answer; sections beyond are left out
/// (and the answer says `"truncated": true`).
pub const MAX_BYTES_PER_ANSWER: usize = 4 * 1024 * 1024;
/// A line longer than this is cut (a binary blob in a log is no line).
pub const MAX_LINE_BYTES: usize = 8 * 1024;
/// Written between a restarted container's previous log and its current one.
pub const RESTART_MARKER: &str = "--- the container restarted; the lines above are from before ---";

/// How much of each log one request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBounds {
    pub lines: usize,
    pub bytes: usize,
}

impl Default for LogBounds {
    fn default() -> Self {
        Self { lines: DEFAULT_LINES, bytes: MAX_BYTES_PER_LOG }
    }
}

impl LogBounds {
    /// From `?lines=N`: a non-negative integer, capped at [`MAX_LINES`].
    pub fn from_query(lines: Option<&str>) -> Result<Self, String> {
        let lines = match lines.map(str::trim) {
            None | Some("") => DEFAULT_LINES as u64,
            Some(n) => n.parse::<u64>().map_err(|_| {
                format!("lines must be a non-negative integer (at most {MAX_LINES}), got {n:?}")
            })?,
        }
        .min(MAX_LINES as u64) as usize;
        Ok(Self { lines, bytes: MAX_BYTES_PER_LOG })
    }

    /// Half of each bound: for a restarted container's previous log, which
    /// shares the bounds with the current one.
    pub fn halved(self) -> Self {
        Self { lines: self.lines.div_ceil(2), bytes: self.bytes / 2 }
    }
}

/// Whose log a section is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Scheduler,
    /// The worker's name: its Dask name (local) or its pod's (Kubernetes).
    Worker(String),
}

/// The last lines of one process's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSection {
    pub source: Source,
    pub lines: Vec<String>,
}

/// Sections in order: the scheduler's (if any) first, then the workers'.
pub type LogStream = BoxStream<'static, LogSection>;

/// Logs kept with a finished cluster's record (the Kubernetes backend
/// captures them before the pods go): already bounded when captured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedLogs {
    pub scheduler: Vec<String>,
    pub workers: BTreeMap<String, Vec<String>>,
}

impl CapturedLogs {
    /// Collects a stream of sections.
    pub async fn collect(mut sections: LogStream) -> Self {
        use futures::StreamExt;
        let mut captured = Self::default();
        while let Some(section) = sections.next().await {
            match section.source {
                Source::Scheduler => captured.scheduler.extend(section.lines),
                Source::Worker(name) => {
                    captured.workers.entry(name).or_default().extend(section.lines)
                }
            }
        }
        captured
    }

    /// The captured sections, cut to `bounds`.
    pub fn into_stream(self, bounds: LogBounds) -> LogStream {
        let cut = move |lines: Vec<String>| last_lines(lines, bounds);
        let scheduler = LogSection { source: Source::Scheduler, lines: cut(self.scheduler) };
        let workers = self.workers.into_iter().map(move |(name, lines)| LogSection {
            source: Source::Worker(name),
            lines: cut(lines),
        });
        Box::pin(futures::stream::iter(std::iter::once(scheduler).chain(workers)))
    }
}

/// The last `bounds.lines` lines whose bytes (with newlines) fit `bounds.bytes`.
pub fn last_lines(mut lines: Vec<String>, bounds: LogBounds) -> Vec<String> {
    let mut bytes = 0usize;
    let mut keep = 0usize;
    for line in lines.iter().rev().take(bounds.lines) {
        bytes += line.len() + 1;
        if bytes > bounds.bytes {
            break;
        }
        keep += 1;
    }
    lines.drain(..lines.len() - keep);
    lines
}

/// The last lines in `tail`, the end of a log. `whole`: `tail` starts at the
/// log's beginning (otherwise its first, partial, line is dropped). Invalid
/// UTF-8 is replaced, long lines are cut at [`MAX_LINE_BYTES`].
pub fn tail_lines(tail: &[u8], whole: bool, bounds: LogBounds) -> Vec<String> {
    let mut text = String::from_utf8_lossy(tail);
    if !whole {
        text = match text.find('\n') {
            Some(i) => text[i + 1..].to_string().into(),
            None => "".into(),
        };
    }
    let lines = text.lines().map(|line| cut_line(line).to_string()).collect();
    last_lines(lines, bounds)
}

fn cut_line(line: &str) -> &str {
    if line.len() <= MAX_LINE_BYTES {
        return line;
    }
    let mut end = MAX_LINE_BYTES;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    &line[..end]
}

/// The last `cap` bytes of a log read as a stream (e.g. from the API
/// server), in at most twice that much memory however long the stream.
#[derive(Debug)]
pub struct TailBuffer {
    buf: Vec<u8>,
    cap: usize,
    /// Bytes were dropped from the front: the first line may be partial.
    dropped: bool,
}

impl TailBuffer {
    pub fn new(cap: usize) -> Self {
        Self { buf: Vec::new(), cap, dropped: false }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
        if self.buf.len() > self.cap.saturating_mul(2).max(4096) {
            self.trim();
        }
    }

    fn trim(&mut self) {
        if self.buf.len() > self.cap {
            self.buf.drain(..self.buf.len() - self.cap);
            self.dropped = true;
        }
    }

    /// The whole lines kept, cut to `bounds`.
    pub fn lines(mut self, bounds: LogBounds) -> Vec<String> {
        self.trim();
        tail_lines(&self.buf, !self.dropped, bounds)
    }
}

/// The last lines of the log file at `path`: reads at most `bounds.bytes`
/// from its end, however big it is. A missing file has no lines.
pub async fn read_tail(path: &Path, bounds: LogBounds) -> std::io::Result<Vec<String>> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let size = file.metadata().await?.len();
    let start = size.saturating_sub(bounds.bytes as u64);
    file.seek(SeekFrom::Start(start)).await?;
    let mut tail = Vec::with_capacity((size - start) as usize);
    file.take(bounds.bytes as u64).read_to_end(&mut tail).await?;
    Ok(tail_lines(&tail, start == 0, bounds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(lines: usize, bytes: usize) -> LogBounds {
        LogBounds { lines, bytes }
    }

    #[test]
    fn the_lines_query_is_capped_and_checked() {
        assert_eq!(LogBounds::from_query(None).unwrap().lines, DEFAULT_LINES);
        assert_eq!(LogBounds::from_query(Some("7")).unwrap().lines, 7);
        assert_eq!(LogBounds::from_query(Some("0")).unwrap().lines, 0);
        assert!(LogBounds::from_query(Some("99999999999999999999")).is_err());
        assert_eq!(LogBounds::from_query(Some("1000000")).unwrap().lines, MAX_LINES);
        for bad in ["-1", "ten", "1.5"] {
            assert!(LogBounds::from_query(Some(bad)).unwrap_err().contains("lines"), "{bad}");
        }
    }

    #[test]
    fn the_last_lines_within_both_bounds() {
        let lines: Vec<String> = (0..10).map(|i| format!("line {i}")).collect();
        assert_eq!(last_lines(lines.clone(), bounds(3, 1 << 20)), ["line 7", "line 8", "line 9"]);
        // Each line is 7 bytes with its newline: 20 bytes hold two.
        assert_eq!(last_lines(lines.clone(), bounds(100, 20)), ["line 8", "line 9"]);
        assert!(last_lines(lines, bounds(0, 1 << 20)).is_empty());
    }

    #[test]
    fn a_tail_from_the_middle_drops_its_partial_first_line() {
        let tail = b"tial line\nfull one\nlast";
        assert_eq!(tail_lines(tail, false, bounds(10, 1 << 20)), ["full one", "last"]);
        assert_eq!(tail_lines(tail, true, bounds(10, 1 << 20)), ["tial line", "full one", "last"]);
        assert!(tail_lines(b"no newline at all", false, bounds(10, 1 << 20)).is_empty());
    }

    #[test]
    fn binary_and_huge_lines_are_made_safe() {
        let mut tail = vec![b'x'; MAX_LINE_BYTES * 3];
        tail.extend_from_slice(b"\n\xff\xfe ok\n");
        let lines = tail_lines(&tail, true, bounds(10, 1 << 20));
        assert_eq!(lines[0].len(), MAX_LINE_BYTES);
        assert_eq!(lines[1], "\u{fffd}\u{fffd} ok");
    }

    #[test]
    fn a_long_stream_keeps_only_its_tail() {
        let mut tail = TailBuffer::new(64);
        for i in 0..10_000 {
            tail.push(format!("line {i}\n").as_bytes());
            assert!(tail.buf.len() <= 4096 + 16);
        }
        let lines = tail.lines(bounds(3, 64));
        assert_eq!(lines, ["line 9997", "line 9998", "line 9999"]);
        let mut short = TailBuffer::new(64);
        short.push(b"first\nsecond\n");
        assert_eq!(short.lines(bounds(10, 64)), ["first", "second"]);
    }

    #[tokio::test]
    async fn a_big_file_is_read_from_its_end_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.log");
        let text: String = (0..200_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, &text).unwrap();
        let lines = read_tail(&path, bounds(5, 4096)).await.unwrap();
        assert_eq!(lines, (199_995..200_000).map(|i| format!("line {i}")).collect::<Vec<_>>());
        let few = read_tail(&path, bounds(1000, 64)).await.unwrap();
        assert!(few.len() < 10 && few.last().unwrap() == "line 199999", "{few:?}");
        assert!(
            read_tail(&dir.path().join("missing.log"), bounds(5, 64)).await.unwrap().is_empty()
        );
    }

    #[tokio::test]
    async fn captured_logs_are_cut_to_the_request() {
        let captured = CapturedLogs {
            scheduler: vec!["a".into(), "b".into(), "c".into()],
            workers: BTreeMap::from([("w1".into(), vec!["x".into(), "y".into()])]),
        };
        let json = serde_json::to_string(&captured).unwrap();
        let back: CapturedLogs = serde_json::from_str(&json).unwrap();
        let cut = CapturedLogs::collect(back.into_stream(bounds(1, 1 << 20))).await;
        assert_eq!(cut.scheduler, ["c"]);
        assert_eq!(cut.workers["w1"], ["y"]);
    }
}
