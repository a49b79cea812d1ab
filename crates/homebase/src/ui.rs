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
