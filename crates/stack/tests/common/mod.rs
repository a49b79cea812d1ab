//! What the corpus tests share: where the corpus is, the companion files some of its files
//! name by their original paths, and whether Compose is installed.

#![allow(dead_code, clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use indexmap::IndexMap;

pub fn corpus_dir() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    [
        here.join("../../../shared/corpus/compose"),
        here.join("../../shared/corpus/compose"),
    ]
    .into_iter()
    .find(|p| p.is_dir())
    .expect("shared/corpus/compose next to the repository")
}

/// Files that other corpus files name by their original paths.
pub const COMPANIONS: &[(&str, &str)] = &[
    (
        "PostHog__posthog__docker-compose.base.yml",
        "docker-compose.base.yml",
    ),
    (
        "infiniflow__ragflow__docker__docker-compose-base.yml",
        "docker-compose-base.yml",
    ),
    (
        "supabase__supabase__docker__docker-compose.yml",
        "supabase/docker/docker-compose.yml",
    ),
];

/// Copies `file` and the companions into `dir`; returns the file's path there.
pub fn stage(dir: &Path, corpus: &Path, file: &str) -> PathBuf {
    for (src, dst) in COMPANIONS {
        let to = dir.join(dst);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(corpus.join(src), to).unwrap();
    }
    let to = dir.join(file);
    fs::copy(corpus.join(file), &to).unwrap();
    to
}

/// The corpus's compose files, sorted.
pub fn corpus_files(corpus: &Path) -> Vec<String> {
    let mut files: Vec<String> = fs::read_dir(corpus)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".yml") || n.ends_with(".yaml"))
        .collect();
    files.sort();
    files
}

pub fn compose_available() -> bool {
    Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A value for each variable `text` names (`$VAR`, `${VAR…}`, not `$$`) that fits where
/// such names go: ports, images, versions, paths, else a word.
pub fn guess_vars(text: &str, env: &mut IndexMap<String, String>) {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            if b.get(i + 1) == Some(&b'$') {
                i += 2;
                continue;
            }
            let start = if b.get(i + 1) == Some(&b'{') {
                i + 2
            } else {
                i + 1
            };
            let mut end = start;
            while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
                end += 1;
            }
            if end > start && !b[start].is_ascii_digit() {
                let name = &text[start..end];
                let upper = name.to_ascii_uppercase();
                let has = |words: &[&str]| words.iter().any(|w| upper.contains(w));
                let value = if has(&["PORT", "BIND"]) {
                    (18080 + env.len()).to_string()
                } else if upper == "PWD" {
                    ".".to_string()
                } else if has(&["SOFT", "HARD"]) {
                    "1".to_string()
                } else if has(&["MEM", "LIMIT"]) {
                    "1g".to_string()
                } else if has(&["IMAGE"]) {
                    "busybox".to_string()
                } else if has(&["VERSION"]) || upper.ends_with("TAG") {
                    "1".to_string()
                } else if has(&[
                    "DATA", "VOLUME", "LOCATION", "PATH", "DIR", "SOCKET", "FILE", "CONF", "MOUNT",
                    "CERT",
                ]) {
                    "./x".to_string()
                } else if has(&[
                    "SOFT", "HARD", "COUNT", "NUM", "SIZE", "WORKERS", "REPLICAS", "TIMEOUT",
                    "RETRIES",
                ]) {
                    "1".to_string()
                } else {
                    "x".to_string()
                };
                env.entry(name.to_string()).or_insert(value);
            }
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
}
