//! An iteration's output: followed from the engine into the loop's log (rotated) and a
//! tail kept for the record, the completion marker watched for across chunk borders.

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use homebase_engine::Engine;
use tokio_util::sync::CancellationToken;

use super::LoopConfig;
use super::result::{Ending, LastLine};
use crate::now;

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
    let marker = l.completion_marker.as_bytes().to_vec();
    let mut tail: Vec<u8> = Vec::new();
    let mut stdout = LastLine::default();
    let mut seen_marker = false;
    let mut timed_out = false;
    let mut stopped = false;
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
                        let bytes = chunk.bytes;
                        append_log(&log, &bytes);
                        if !chunk.stderr {
                            stdout.feed(&bytes);
                        }
                        // scan across chunk borders
                        let from = tail.len().saturating_sub(marker.len());
                        tail.extend_from_slice(&bytes);
                        if !seen_marker && contains(&tail[from..], &marker) {
                            seen_marker = true;
                        }
                        if tail.len() > SCAN_BYTES * 2 {
                            tail.drain(..tail.len() - SCAN_BYTES);
                        }
                    }
                    Some(Err(e)) => { error = format!("{e:#}"); break; }
                    None => break,
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
    if adopted && tail.is_empty() {
        // (the result line may be long: up to 200 lines of the end)
        for chunk in engine.output_tail(&id, 200).await.unwrap_or_default() {
            if !chunk.stderr {
                stdout.feed(&chunk.bytes);
            }
            tail.extend_from_slice(&chunk.bytes);
        }
        seen_marker = contains(&tail, &marker);
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
        marker: seen_marker,
        tail,
        ending: stdout.finish(),
        error,
    })
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
