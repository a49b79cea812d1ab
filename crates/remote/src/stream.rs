//! A script read line by line while it runs.

use super::RemoteError;
use std::process::Child;
use std::time::Duration;

/// A script whose output is read line by line while it runs ([`Session::stream`]). Its
/// stdin stays open until the stream is closed or dropped, so a script may keep running as
/// long as this process lives (and no longer: when this process dies, stdin closes).
pub struct Stream {
    pub(crate) child: Child,
    pub(crate) stdin: Option<std::process::ChildStdin>,
    pub(crate) lines: std::sync::mpsc::Receiver<Vec<u8>>,
    pub(crate) stderr: Option<std::thread::JoinHandle<Vec<u8>>>,
    pub(crate) host: String,
    pub(crate) command: String,
    pub(crate) ssh: bool,
}

/// What [`Stream::next`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// One line of output, without its newline, and its length in bytes with the newline.
    Line(String, usize),
    /// The last bytes of the output, which did not end with a newline.
    Partial(String),
    /// Nothing within the wait.
    Idle,
    /// The output ended.
    End,
}

impl Stream {
    /// The next line, waiting at most `wait`.
    pub fn next(&mut self, wait: Duration) -> Next {
        match self.lines.recv_timeout(wait) {
            Ok(raw) => match raw.strip_suffix(b"\n") {
                Some(line) => Next::Line(String::from_utf8_lossy(line).into_owned(), raw.len()),
                None => Next::Partial(String::from_utf8_lossy(&raw).into_owned()),
            },
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Next::Idle,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Next::End,
        }
    }

    /// Waits for the script to end (after its output ended): its status, or the lost
    /// connection when ssh itself failed.
    pub fn finish(mut self) -> Result<std::process::ExitStatus, RemoteError> {
        self.stdin.take();
        let status = self.child.wait().map_err(|source| RemoteError::Spawn {
            host: self.host.clone(),
            program: "ssh".into(),
            source,
        })?;
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let stderr = String::from_utf8_lossy(&stderr).to_string();
        if self.ssh && status.code() == Some(255) {
            return Err(RemoteError::Lost {
                host: self.host.clone(),
                detail: stderr.trim().to_string(),
            });
        }
        if !status.success() {
            return Err(RemoteError::Command {
                host: self.host.clone(),
                command: self.command.clone(),
                status: status.to_string(),
                stderr,
            });
        }
        Ok(status)
    }

    /// Sends `data` to the script's stdin and closes it (the script sees end of input).
    pub fn send_input(&mut self, data: &[u8]) -> Result<(), RemoteError> {
        use std::io::Write;
        if let Some(mut stdin) = self.stdin.take()
            && !data.is_empty()
        {
            // (not an io::Error in the chain: a broken pipe to ssh is a lost connection, not
            // the quiet end of this process's own output)
            stdin.write_all(data).map_err(|e| RemoteError::Lost {
                host: self.host.clone(),
                detail: format!("while sending the input of `{}`: {e}", self.command),
            })?;
        }
        Ok(())
    }

    /// Ends the script: closes its stdin (the host sees end of input once the client is
    /// gone) and stops the client without waiting for a round trip.
    pub fn close(mut self) {
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stdin.take();
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
