//! How the host protocol tells what it is doing: long work through a [`Report`] its caller
//! passes (the CLI's spinners and JSON events), and the odd note or warning outside any
//! step (a lock that could not be released in a destructor, a backup skipped, the way a
//! command took) through the sink the caller installs once. The library never writes to
//! the terminal itself, so what reaches it passes the CLI's one gate.

use std::sync::OnceLock;

/// The steps of long work: one step at a time, each done or failed.
pub trait Report {
    /// Starts a step (the one before it is done).
    fn step(&mut self, name: &str);
    /// The current step succeeded.
    fn done(&mut self);
    /// The current step failed, with why.
    fn fail(&mut self, message: &str);
    /// What the current step is doing now (a build's step).
    fn detail(&self, text: &str);
    /// A line of information between steps.
    fn info(&self, message: &str);
    /// A question for whoever watches, answered with a line; `None` when no one can answer
    /// (no terminal): the caller takes its default.
    fn ask(&self, question: &str) -> Option<String>;
}

/// Where notes and warnings outside any step go.
#[derive(Clone, Copy)]
pub struct Sink {
    pub note: fn(&str),
    pub warn: fn(&str),
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Installs where notes and warnings go; the first call wins. Without one they go to
/// stderr, made printable.
pub fn install(sink: Sink) {
    let _ = SINK.set(sink);
}

fn plain(prefix: &'static str) -> impl Fn(&str) {
    move |m| eprintln!("{prefix}: {}", homebase_proto::text::printable(m))
}

/// A note: something the user may want to know, not a problem.
pub fn note(message: &str) {
    match SINK.get() {
        Some(s) => (s.note)(message),
        None => plain("note")(message),
    }
}

/// A warning: something went wrong that does not stop the work.
pub fn warn(message: &str) {
    match SINK.get() {
        Some(s) => (s.warn)(message),
        None => plain("warning")(message),
    }
}

/// A [`Report`] that shows nothing and answers no question: for work no one watches.
pub struct Quiet;

impl Report for Quiet {
    fn step(&mut self, _: &str) {}
    fn done(&mut self) {}
    fn fail(&mut self, _: &str) {}
    fn detail(&self, _: &str) {}
    fn info(&self, _: &str) {}
    fn ask(&self, _: &str) -> Option<String> {
        None
    }
}
