//! A bounded fuzz of the compose loader, seeded from the corpus: every real file, cut,
//! spliced and sprinkled with the YAML and Compose syntax that breaks parsers (anchors,
//! aliases, merge keys, merge tags, interpolation, deep nesting), must load or be refused with
//! an error: no panic, no hang (each load is given a few seconds), and a YAML alias bomb is
//! refused, not expanded. `HB_FUZZ_CASES` sets the number of cases (CI: the default).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::fs;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use common::{corpus_dir, corpus_files};
use homebase_stack::{ComposeProject, LoadOptions};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Pieces of syntax a mutation inserts.
const TOKENS: &[&str] = &[
    "&a ",
    "*a",
    "<<: *a\n",
    "<<: [*a, *a]\n",
    "!reset ",
    "!override ",
    "!!binary ",
    "${",
    "${X:?err}",
    "${X:-${Y:-z}}",
    "$$",
    "}",
    "[",
    "]",
    "{",
    "}",
    ": ",
    "- ",
    "\n",
    "\n  ",
    "\t",
    "'",
    "\"",
    "#",
    "|\n",
    ">-\n",
    "? ",
    "---\n",
    "...\n",
    "~",
    "null",
    "0x1F",
    "1e999",
    "services:\n",
    "  web:\n    image: x\n",
    "extends: web\n",
    "include: [x.yml]\n",
    "profiles: ['']\n",
    "depends_on: [web]\n",
    "\u{feff}",
    "\u{0}",
];

#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Duplicate(usize, usize, usize),
    Insert(usize, usize),
}

fn apply(mut text: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let n = text.len().max(1);
        match *e {
            Edit::Delete(at, len) => {
                let at = at % n;
                let end = (at + len % 64).min(text.len());
                if at < end {
                    text.drain(at..end);
                }
            }
            Edit::Duplicate(from, len, to) => {
                let from = from % n;
                let end = (from + len % 256).min(text.len());
                if from < end {
                    let piece: Vec<u8> = text[from..end].to_vec();
                    let to = (to % n).min(text.len());
                    text.splice(to..to, piece);
                }
            }
            Edit::Insert(at, token) => {
                let at = (at % n).min(text.len());
                let t = TOKENS[token % TOKENS.len()].as_bytes();
                text.splice(at..at, t.iter().copied());
            }
        }
    }
    text
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<usize>()).prop_map(|(a, l)| Edit::Delete(a, l)),
        (any::<usize>(), any::<usize>(), any::<usize>())
            .prop_map(|(a, l, t)| Edit::Duplicate(a, l, t)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, t)| Edit::Insert(a, t)),
    ]
}

/// Loads `text` as a compose file on another thread; panics if it panics or takes too long.
fn load_in_time(dir: &std::path::Path, text: &[u8]) -> Result<(), String> {
    let path: PathBuf = dir.join("compose.yml");
    fs::write(&path, text).unwrap();
    let (tx, rx) = mpsc::channel();
    let p = path.clone();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(|| {
            ComposeProject::load(&LoadOptions {
                files: vec![p],
                ..Default::default()
            })
            .map(|_| ())
            .map_err(|e| e.to_string())
        });
        let _ = tx.send(r);
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(_)) => Err("the loader panicked".into()),
        Err(_) => Err("the loader took more than 10 s".into()),
    }
}

#[test]
fn the_loader_never_panics_or_hangs_on_mangled_corpus_files() {
    let Some(corpus) = corpus_dir() else { return };
    let seeds: Vec<Vec<u8>> = corpus_files(&corpus)
        .iter()
        .map(|f| fs::read(corpus.join(f)).unwrap())
        .collect();
    let cases = std::env::var("HB_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500);
    let dir = tempfile::tempdir().unwrap();
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (0..seeds.len(), proptest::collection::vec(edit(), 1..12));
    runner
        .run(&strategy, |(seed, edits)| {
            let text = apply(seeds[seed].clone(), &edits);
            load_in_time(dir.path(), &text).map_err(TestCaseError::fail)?;
            Ok(())
        })
        .unwrap();
}

#[test]
fn a_yaml_alias_bomb_is_refused_not_expanded() {
    // ten levels of ten aliases: 10^10 nodes if expanded
    let mut text = String::from("x-a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        text.push_str(&format!("x-a{i}: &a{i} [{refs}]\n"));
    }
    text.push_str("services:\n  web:\n    image: busybox\n    command: *a9\n");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("compose.yml");
    fs::write(&path, &text).unwrap();
    let started = std::time::Instant::now();
    let err = ComposeProject::load(&LoadOptions {
        files: vec![path],
        ..Default::default()
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("alias"), "{err}");
    eprintln!("refused in {:?}: {err}", started.elapsed());
}
