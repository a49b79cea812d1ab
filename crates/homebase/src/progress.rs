//! Progress of long work: a spinner per step on a terminal, plain lines otherwise, one JSON
//! event per line with `--json`. All of it on stderr except JSON events (stdout).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use homebase_proto::DeployEvent;
use indicatif::{ProgressBar, ProgressStyle};

use crate::ui::{BAD, GOOD, paint};

pub struct Progress {
    json: bool,
    terminal: bool,
    current: Option<(String, Instant, Option<ProgressBar>)>,
}

impl Progress {
    pub fn new(json: bool) -> Progress {
        Progress {
            json,
            terminal: !json && std::io::stderr().is_terminal(),
            current: None,
        }
    }

    fn emit(&self, event: &str, step: &str, message: Option<String>, ms: Option<u64>) {
        let e = DeployEvent {
            event: event.into(),
            step: step.into(),
            message,
            ms,
        };
        if let Ok(line) = serde_json::to_string(&e) {
            crate::say!("{line}");
        }
    }

    pub fn step(&mut self, name: &str) {
        let name = &crate::ui::terminal_safe(name);
        self.finish_current(true, None);
        if self.json {
            self.emit("step", name, None, None);
        }
        let bar = if self.terminal {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b.set_message(name.to_string());
            b.enable_steady_tick(Duration::from_millis(100));
            Some(b)
        } else {
            if !self.json {
                crate::esay!("… {name}");
            }
            None
        };
        self.current = Some((name.to_string(), Instant::now(), bar));
    }

    fn finish_current(&mut self, ok: bool, message: Option<&str>) {
        let Some((name, start, bar)) = self.current.take() else {
            return;
        };
        let ms = start.elapsed().as_millis() as u64;
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        if self.json {
            self.emit(
                if ok { "done" } else { "failed" },
                &name,
                message.map(str::to_string),
                Some(ms),
            );
        } else {
            let mark = if ok {
                paint(GOOD, "✓")
            } else {
                paint(BAD, "✗")
            };
            let extra = message.map(|m| format!(": {m}")).unwrap_or_default();
            let mut err = anstream::stderr();
            let _ = std::io::Write::write_fmt(
                &mut err,
                format_args!("{mark} {name} ({:.1}s){extra}\n", ms as f64 / 1000.0),
            );
        }
    }

    pub fn done(&mut self) {
        self.finish_current(true, None);
    }

    /// Ends the step with a note (`lock (0.6s): round trips of 250 ms to HOST`).
    pub fn done_with(&mut self, note: &str) {
        let note = &crate::ui::terminal_safe(note);
        self.finish_current(true, Some(note));
    }

    pub fn fail(&mut self, message: &str) {
        let message = &crate::ui::terminal_safe(message);
        self.finish_current(false, Some(message));
    }

    /// Asks a question on the terminal (the spinner paused) and returns the answer line;
    /// empty when stdin is closed; `None` when stdin or stderr is not a terminal.
    pub fn ask(&self, question: &str) -> Option<String> {
        if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
            return None;
        }
        let read = || {
            eprint!("{question}");
            let mut answer = String::new();
            let _ = std::io::stdin().read_line(&mut answer);
            answer
        };
        Some(match &self.current {
            Some((_, _, Some(bar))) => bar.suspend(read),
            _ => read(),
        })
    }

    /// What the current step is doing now (a build's step): the spinner's message on a
    /// terminal, an indented line otherwise, a `progress` event with `--json`.
    pub fn detail(&self, text: &str) {
        let text = &crate::ui::terminal_safe(text);
        let Some((name, _, bar)) = &self.current else {
            return;
        };
        if self.json {
            self.emit("progress", name, Some(text.into()), None);
        } else if let Some(b) = bar {
            b.set_message(format!("{name}: {text}"));
        } else {
            crate::esay!("  {text}");
        }
    }

    /// A line of information between steps.
    pub fn info(&self, message: &str) {
        let message = &crate::ui::terminal_safe(message);
        if self.json {
            self.emit("info", "", Some(message.into()), None);
        } else {
            crate::esay!("{message}");
        }
    }
}

/// The host protocol's long work (a release, a build) shown as this command's steps.
impl homebase_host::report::Report for Progress {
    fn step(&mut self, name: &str) {
        Progress::step(self, name);
    }
    fn done(&mut self) {
        Progress::done(self);
    }
    fn fail(&mut self, message: &str) {
        Progress::fail(self, message);
    }
    fn detail(&self, text: &str) {
        Progress::detail(self, text);
    }
    fn info(&self, message: &str) {
        Progress::info(self, message);
    }
    fn ask(&self, question: &str) -> Option<String> {
        Progress::ask(self, question)
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some((_, _, Some(b))) = self.current.take() {
            b.finish_and_clear();
        }
    }
}
