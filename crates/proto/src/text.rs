//! Text a host supplied, made safe to show: the characters a terminal acts on, shown
//! escaped. The CLI's `ui::terminal_safe` and the host protocol's parsers share these rules.

/// Characters a terminal acts on instead of showing: C0 and C1 controls (escape
/// sequences, OSC window titles and clipboard writes, bells), DEL, the bidirectional
/// controls that reorder what is shown (Trojan Source), and the line and paragraph
/// separators.
pub fn acts_on_terminal(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}'
        )
}

/// `c` as a visible escape: `\u{1b}` for the C0 controls (never raw in homebase's JSON,
/// which escapes them itself), `\u009b` for the others (DEL, C1, bidi), which keeps JSON
/// valid and equal.
pub fn escaped(c: char, out: &mut String) {
    use std::fmt::Write as _;
    if c < ' ' {
        let _ = write!(out, "{}", c.escape_unicode());
    } else {
        let _ = write!(out, "\\u{:04x}", c as u32);
    }
}

/// Text from the host (container logs, names, one line of output) made safe for a terminal
/// and kept on one line: every character the CLI's `terminal_safe` escapes, and newlines too; tabs
/// kept.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c != '\t' && acts_on_terminal(c) {
            escaped(c, &mut out);
        } else {
            out.push(c);
        }
    }
    out
}
