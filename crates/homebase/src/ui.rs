//! Human output: colour only on a terminal (or when asked), errors on stderr.

use std::io::Write;
use std::sync::OnceLock;

use anstyle::{AnsiColor, Style};

use crate::cli::ColorChoice;

static CHOICE: OnceLock<anstream::ColorChoice> = OnceLock::new();

pub fn init(choice: ColorChoice) {
    let c = match choice {
        ColorChoice::Auto => anstream::ColorChoice::Auto,
        ColorChoice::Always => anstream::ColorChoice::Always,
        ColorChoice::Never => anstream::ColorChoice::Never,
    };
    c.write_global();
    let _ = CHOICE.set(c);
}

pub const BOLD: Style = Style::new().bold();
pub const GOOD: Style = AnsiColor::Green.on_default();
pub const BAD: Style = AnsiColor::Red.on_default().bold();
pub const WARN: Style = AnsiColor::Yellow.on_default();
pub const DIM: Style = Style::new().dimmed();

/// `text` wrapped in `style` (stripped later by anstream when colour is off).
pub fn paint(style: Style, text: impl std::fmt::Display) -> String {
    format!("{style}{text}{style:#}")
}

pub fn error(message: &str) {
    let mut err = anstream::stderr();
    let _ = writeln!(err, "{}: {message}", paint(BAD, "error"));
}

pub fn warn(message: &str) {
    let mut err = anstream::stderr();
    let _ = writeln!(err, "{}: {message}", paint(WARN, "warning"));
}

/// Writes to stdout; a closed pipe surfaces as an error the caller returns.
pub fn out(text: &str) -> std::io::Result<()> {
    let mut out = anstream::stdout();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// Text from the host (container logs, names) made safe for a terminal: control characters
/// (escape sequences among them) shown as `\u{..}` escapes, tabs kept.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Runs `command` (ssh printing host output) with its stdout copied here line by line
/// through [`printable`]: container logs reach the terminal as text, never as escape
/// sequences. Returns whether it succeeded.
pub fn run_printable(mut command: std::process::Command, what: &str) -> anyhow::Result<bool> {
    use std::io::BufRead;
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run ssh for {what}: {e}"))?;
    if let Some(stdout) = child.stdout.take() {
        let mut reader = std::io::BufReader::new(stdout);
        let mut line = Vec::new();
        let mut out = std::io::stdout().lock();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    let text = text.strip_suffix('\n').unwrap_or(&text);
                    let text = text.strip_suffix('\r').unwrap_or(text);
                    if writeln!(out, "{}", printable(text))
                        .and_then(|()| out.flush())
                        .is_err()
                    {
                        // the reader went away (a closed pipe): stop ssh and end quietly
                        let _ = child.kill();
                        let _ = child.wait();
                        return Ok(true);
                    }
                }
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| anyhow::anyhow!("ssh for {what} did not end: {e}"))?;
    Ok(status.success())
}
