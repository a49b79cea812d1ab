//! An iteration's output: followed from the engine into the loop's log (rotated) and a
//! tail kept for the record, the completion marker watched for across chunk borders.

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use homebase_engine::Engine;
use homebase_engine::run::Chunk;
use tokio_util::sync::CancellationToken;

use super::LoopConfig;
use super::result::{Ending, LastLine};
use homebase_proto::clock::now;

/// Bytes of output kept in an iteration's record.
pub const TAIL_BYTES: usize = 4096;
/// Bytes of output scanned for the usage-limit pattern.
const SCAN_BYTES: usize = 64 * 1024;
/// The output log of a loop is rotated above this size.
const LOG_MAX: u64 = 8 << 20;

/// The result of watching an iteration's container to its end.
pub struct Watched {
    pub exit_code: Option<i64>,
    pub oom: bool,
    pub timed_out: bool,
    pub stopped: bool,
    pub marker: bool,
    pub tail: Vec<u8>,
    /// The last line of its standard output (where an agent prints its result).
    pub ending: Ending,
    pub error: String,
}

impl Watched {
    /// An iteration that never ran: `error` says why.
    pub fn failed(error: String) -> Watched {
        Watched {
            exit_code: None,
            oom: false,
            timed_out: false,
            stopped: false,
            marker: false,
            tail: error.clone().into_bytes(),
            ending: Ending::Empty,
            error,
        }
    }
}

/// Follows a container's output to the log and a tail buffer until it ends, its timeout
/// passes (killed), `stop` fires (killed), the loop is removed (killed) or the daemon shuts
/// down (left running: `None`).
#[allow(clippy::too_many_arguments)]
pub async fn watch_container(
    engine: Engine,
    cfg: LoopConfig,
    id: String,
    started: i64,
    adopted: bool,
    stop: CancellationToken,
    shutdown: CancellationToken,
    removed: CancellationToken,
) -> Option<Watched> {
    let l = &cfg.section;
    let log = cfg.dir().join(homebase_proto::layout::LOOP_OUTPUT);
    let deadline = started + l.timeout.as_secs() as i64;
    let remaining = Duration::from_secs((deadline - now()).max(0) as u64);
    let mut out = Follow::new(l.completion_marker.as_bytes().to_vec());
    let mut timed_out = false;
    let mut stopped = false;
    let mut ended = false;
    let mut error = String::new();
    if adopted {
        append_log(
            &log,
            b"homebase: the daemon restarted; output before this point may be missing here\n",
        );
    }
    {
        let stream = engine.output(&id);
        tokio::pin!(stream);
        let sleep = tokio::time::sleep(remaining);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                chunk = stream.next() => match chunk {
                    Some(Ok(chunk)) => {
                        append_log(&log, &chunk.bytes);
                        out.take(chunk);
                    }
                    Some(Err(e)) => { error = format!("{e:#}"); break; }
                    None => { ended = true; break; }
                },
                _ = &mut sleep => { timed_out = true; break; }
                _ = stop.cancelled() => { stopped = true; break; }
                _ = removed.cancelled() => { stopped = true; break; }
                _ = shutdown.cancelled() => return None,
            }
        }
    }
    if timed_out || stopped {
        let _ = engine.kill(&id).await;
    }
    // The log stream ends when the container does; its state follows within moments.
    let mut exit = None;
    for _ in 0..50 {
        match engine.exit(&id).await {
            Ok(e) if !e.running => {
                exit = Some(e);
                break;
            }
            Ok(_) => {
                if !timed_out && !stopped && (deadline - now()) <= 0 {
                    timed_out = true;
                    let _ = engine.kill(&id).await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                error = format!("{e:#}");
                break;
            }
        }
    }
    // A followed stream can end before the engine has handed over the last lines of a
    // container that exits at once (seen with the json-file driver): once it has stopped,
    // its stored log is complete, and what the stream missed is read from there. An
    // adopted container's output was not followed from its start: its end is read the
    // same way. (The result line may be long: up to `REREAD_LINES` lines of the end.)
    if exit.is_some() && (ended || adopted) {
        match engine.output_tail(&id, REREAD_LINES).await {
            Ok(stored) => {
                for chunk in out.missed(stored) {
                    append_log(&log, &chunk.bytes);
                    out.take(chunk);
                }
            }
            Err(e) => tracing::warn!("cannot read the end of {id}'s output: {e:#}"),
        }
    }
    if let Some(e) = exit.as_mut()
        && e.exit_code == 137
        && !e.oom_killed
        && !stopped
        && !timed_out
    {
        e.oom_killed = oom_after_exit(&engine, &id, started).await;
    }
    let (exit_code, oom) = match &exit {
        Some(e) => (Some(e.exit_code), e.oom_killed),
        None => (None, false),
    };
    if exit.is_none() && error.is_empty() {
        error = "the container did not stop after it was killed".into();
    }
    Some(Watched {
        exit_code,
        oom,
        timed_out,
        stopped,
        marker: out.marker,
        tail: out.tail,
        ending: out.stdout.finish(),
        error,
    })
}

/// Whether a container killed (137) by nobody the daemon knows of was killed for memory:
/// its `OOMKilled` flag can miss an OOM event that came after the exit (see
/// `Engine::oom_logged`), so the engine's event log is read for a moment as well.
async fn oom_after_exit(engine: &Engine, id: &str, started: i64) -> bool {
    for _ in 0..8 {
        match engine.oom_logged(id, started - 1).await {
            Ok(true) => return true,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!("cannot read the engine's events of {id}: {e:#}");
                return false;
            }
        }
        if matches!(engine.exit(id).await, Ok(e) if e.oom_killed) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

/// Lines of a stopped container's stored log read back to find what a stream missed.
const REREAD_LINES: usize = 200;

/// What is kept of an iteration's output as it arrives: the tail, the last line of
/// standard output, whether the marker was seen, and the last chunks (to line up with the
/// stored log at the end).
struct Follow {
    marker_text: Vec<u8>,
    marker: bool,
    tail: Vec<u8>,
    stdout: LastLine,
    recent: std::collections::VecDeque<Chunk>,
}

impl Follow {
    fn new(marker_text: Vec<u8>) -> Follow {
        Follow {
            marker_text,
            marker: false,
            tail: Vec::new(),
            stdout: LastLine::default(),
            recent: std::collections::VecDeque::new(),
        }
    }

    fn take(&mut self, chunk: Chunk) {
        if !chunk.stderr {
            self.stdout.feed(&chunk.bytes);
        }
        // scan across chunk borders
        let from = self.tail.len().saturating_sub(self.marker_text.len());
        self.tail.extend_from_slice(&chunk.bytes);
        if !self.marker && contains(&self.tail[from..], &self.marker_text) {
            self.marker = true;
        }
        if self.tail.len() > SCAN_BYTES * 2 {
            self.tail.drain(..self.tail.len() - SCAN_BYTES);
        }
        if self.recent.len() == REREAD_LINES {
            self.recent.pop_front();
        }
        self.recent.push_back(chunk);
    }

    /// The chunks at the end of `stored` (a stopped container's log, its last lines) that
    /// did not arrive: those after the longest start of `stored` that matches the end of
    /// what arrived. When nothing lines up and something arrived, nothing is taken for
    /// missing (the stored end is then newer than `REREAD_LINES` can tell).
    fn missed(&mut self, stored: Vec<Chunk>) -> Vec<Chunk> {
        let seen = self.recent.make_contiguous();
        for keep in (1..=stored.len().min(seen.len())).rev() {
            if stored[..keep] == seen[seen.len() - keep..] {
                return stored.into_iter().skip(keep).collect();
            }
        }
        if seen.is_empty() { stored } else { Vec::new() }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// The last `max` bytes as text, starting at a line when one starts within.
pub fn tail_str(bytes: &[u8], max: usize) -> String {
    let start = bytes.len().saturating_sub(max);
    let mut slice = &bytes[start..];
    if start > 0
        && let Some(nl) = slice.iter().position(|b| *b == b'\n')
    {
        slice = &slice[nl + 1..];
    }
    String::from_utf8_lossy(slice).to_string()
}

/// Appends to a loop's output log, rotating it (one old file kept) above `LOG_MAX`.
pub fn append_log(path: &Path, data: &[u8]) {
    use std::io::Write;
    if let Some(dir) = path.parent()
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        tracing::warn!("cannot create `{}`: {e}", dir.display());
        return;
    }
    if std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) > LOG_MAX {
        let _ = std::fs::rename(path, path.with_extension("log.1"));
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).append(true);
    // an agent's output may carry what it read: the owner's only
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(path) {
        Ok(mut f) => {
            if let Err(e) = f.write_all(data) {
                tracing::warn!("cannot write `{}`: {e}", path.display());
            }
        }
        Err(e) => tracing::warn!("cannot open `{}`: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(text: &str) -> Vec<Chunk> {
        text.split_inclusive('\n')
            .map(|l| Chunk {
                stderr: l.starts_with('!'),
                bytes: l.as_bytes().to_vec(),
            })
            .collect()
    }

    fn follow(text: &str) -> Follow {
        let mut f = Follow::new(b"<promise>COMPLETE</promise>".to_vec());
        for c in chunks(text) {
            f.take(c);
        }
        f
    }

    #[test]
    fn what_a_stream_missed_is_taken_from_the_stored_log() {
        // the stream ended before the result line
        let mut f = follow("!a line on stderr\n");
        let missed = f.missed(chunks("!a line on stderr\n{\"type\":\"result\"}\n"));
        assert_eq!(missed, chunks("{\"type\":\"result\"}\n"));
        for c in missed {
            f.take(c);
        }
        assert_eq!(
            f.stdout.finish(),
            super::super::result::Ending::Line(b"{\"type\":\"result\"}".to_vec())
        );
        // nothing missed, repeated lines included
        let mut f = follow("x\ny\nx\ny\n");
        assert!(f.missed(chunks("x\ny\nx\ny\n")).is_empty());
        // a repeated pair missed
        let mut f = follow("x\ny\n");
        assert_eq!(f.missed(chunks("x\ny\nx\ny\n")), chunks("x\ny\n"));
        // nothing followed (an adopted container): all of the stored end
        let mut f = follow("");
        assert_eq!(f.missed(chunks("p\nq\n")), chunks("p\nq\n"));
        // the stored end does not line up with what arrived: nothing guessed
        let mut f = follow("a\nb\n");
        assert!(f.missed(chunks("c\nd\n")).is_empty());
        // the marker in a missed line counts
        let mut f = follow("working\n");
        for c in f.missed(chunks("working\n<promise>COMPLETE</promise>\n")) {
            f.take(c);
        }
        assert!(f.marker);
    }

    #[test]
    fn tails_start_at_a_line() {
        assert_eq!(tail_str(b"one\ntwo\nthree\n", 8), "three\n");
        assert_eq!(tail_str(b"short", 100), "short");
    }

    #[test]
    fn the_marker_is_found_only_whole() {
        assert!(contains(
            b"abc<promise>COMPLETE</promise>",
            b"<promise>COMPLETE</promise>"
        ));
        assert!(!contains(b"<promise>COMPL", b"<promise>COMPLETE</promise>"));
        assert!(!contains(b"anything", b""));
    }
}
