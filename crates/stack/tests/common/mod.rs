//! What the corpus tests share: where the corpus is, the companion files some of its files
//! name by their original paths, and whether Compose is installed.

#![allow(dead_code, clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

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
