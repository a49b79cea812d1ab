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
    let _ = writeln!(err, "{}: {}", paint(BAD, "error"), terminal_safe(message));
}

/// A remark on stderr (how the command went about its work), never on stdout.
pub fn note(message: &str) {
    let mut err = anstream::stderr();
    let _ = writeln!(err, "{}: {}", paint(DIM, "note"), terminal_safe(message));
}

pub fn warn(message: &str) {
    let mut err = anstream::stderr();
    let _ = writeln!(
        err,
        "{}: {}",
        paint(WARN, "warning"),
        terminal_safe(message)
    );
}

/// Writes to stdout through [`terminal_safe`]; a closed pipe surfaces as an error the
/// caller returns.
pub fn out(text: &str) -> std::io::Result<()> {
    let mut out = anstream::stdout();
    out.write_all(terminal_safe(text).as_bytes())?;
    out.flush()
}

/// Writes a line to stdout through [`terminal_safe`] (a closed pipe ends quietly).
pub fn out_line(text: &str) {
    let mut out = anstream::stdout();
    let _ = writeln!(out, "{}", terminal_safe(text));
}

/// `println!` through [`terminal_safe`].
#[macro_export]
macro_rules! say {
    () => { $crate::ui::out_line("") };
    ($($t:tt)*) => { $crate::ui::out_line(&format!($($t)*)) };
}

/// `eprintln!` through [`terminal_safe`].
#[macro_export]
macro_rules! esay {
    () => { $crate::ui::err_line("") };
    ($($t:tt)*) => { $crate::ui::err_line(&format!($($t)*)) };
}

/// Writes a line to stderr through [`terminal_safe`].
pub fn err_line(text: &str) {
    let mut err = anstream::stderr();
    let _ = writeln!(err, "{}", terminal_safe(text));
}

/// The styles homebase itself paints with, as the sequences they render to: the only escape
/// sequences that reach a terminal.
fn own_sequences() -> &'static [String] {
    static SEQ: OnceLock<Vec<String>> = OnceLock::new();
    SEQ.get_or_init(|| {
        let mut v: Vec<String> = [BOLD, GOOD, BAD, WARN, DIM]
            .iter()
            .flat_map(|s| [format!("{s}"), format!("{s:#}")])
            .filter(|s| !s.is_empty())
            .collect();
        v.sort_by_key(|s| std::cmp::Reverse(s.len()));
        v.dedup();
        v
    })
}

/// The one gate between text and the laptop's terminal: everything homebase prints (tables,
/// reports, errors, progress, JSON) passes here, so a string the host supplied (an agent's
/// output, a release log line, an alert, a container name) never reaches the terminal raw.
/// Newlines and tabs stay, homebase's own colours stay; every other control character, the
/// bidirectional controls among them, is shown escaped.
pub use homebase_proto::text::printable;
use homebase_proto::text::{acts_on_terminal, escaped};

pub fn terminal_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c == '\u{1b}'
            && let Some(seq) = own_sequences()
                .iter()
                .find(|s| rest.starts_with(s.as_str()))
        {
            out.push_str(seq);
            rest = &rest[seq.len()..];
            continue;
        }
        if c == '\n' || c == '\t' || !acts_on_terminal(c) {
            out.push(c);
        } else {
            escaped(c, &mut out);
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Runs `command` (ssh printing host output) with its stdout copied here line by line
/// through [`printable`]: container logs reach the terminal as text, never as escape
/// sequences. Returns whether it succeeded and how many lines it printed.
pub fn run_printable(
    mut command: std::process::Command,
    what: &str,
) -> anyhow::Result<(bool, usize)> {
    use std::io::BufRead;
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run ssh for {what}: {e}"))?;
    if let Some(stdout) = child.stdout.take() {
        let mut reader = std::io::BufReader::new(stdout);
        let mut line = Vec::new();
        let mut out = std::io::stdout().lock();
        let mut lines = 0;
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
                        return Ok((true, lines));
                    }
                    lines += 1;
                }
            }
        }
        let status = child
            .wait()
            .map_err(|e| anyhow::anyhow!("ssh for {what} did not end: {e}"))?;
        return Ok((status.success(), lines));
    }
    let status = child
        .wait()
        .map_err(|e| anyhow::anyhow!("ssh for {what} did not end: {e}"))?;
    Ok((status.success(), 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_bytes_never_reach_the_terminal_raw() {
        let hostile = "a\u{1b}[H\u{1b}[J\u{1b}c b\u{1b}]0;title\u{7} \u{1b}]52;c;cHduZWQ=\u{7} \u{9b}31m \u{202e}txt.exe\u{2066} \u{7f}\r";
        for out in [terminal_safe(hostile), printable(hostile)] {
            assert!(!out.chars().any(acts_on_terminal), "{out:?}");
            assert!(out.contains("\\u{1b}[H"), "{out}");
            assert!(out.contains("\\u202e"), "{out}");
        }
        // homebase's own colours and newlines stay; JSON stays valid and equal
        let painted = format!("{}\nnext\ttab", paint(BAD, "red"));
        assert_eq!(terminal_safe(&painted), painted);
        let json = serde_json::to_string(&serde_json::json!({ "x": hostile })).unwrap();
        let safe = terminal_safe(&json);
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back["x"], hostile);
        assert!(!safe.chars().any(acts_on_terminal));
        assert_eq!(printable("two\nlines"), "two\\u{a}lines");
    }
}
