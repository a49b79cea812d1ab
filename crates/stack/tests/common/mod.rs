//! What the corpus tests and the corpus bench share: where the corpus is (the shared one,
//! the fetched one), the companion files some of its files name by their original paths, the
//! cases made of them with their variables, and whether Compose is installed.

#![allow(dead_code, clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use homebase_stack::{ComposeProject, LoadOptions, StackError};
use indexmap::IndexMap;

/// The shared corpus beside the repository (`../shared/corpus/compose`); `None`, with a
/// notice naming what is missing, in a clone without it: the tests that read it then cover
/// only what the repository carries.
pub fn corpus_dir() -> Option<PathBuf> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let found = [
        here.join("../../../shared/corpus/compose"),
        here.join("../../shared/corpus/compose"),
    ]
    .into_iter()
    .find(|p| p.is_dir());
    if found.is_none() {
        eprintln!(
            "NOTICE: no shared/corpus/compose beside the repository ({}): the shared corpus part is skipped",
            here.join("../../../shared/corpus/compose").display()
        );
    }
    found
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

/// Multi-file sets as projects document them: an override file over a base, with Compose's
/// merge tags and merge keys nested through anchors.
pub const SETS: &[(&str, &[(&str, &str)])] = &[(
    "base + override with !reset, !override and nested merge keys",
    &[
        (
            "compose.yml",
            "x-a: &a {image: busybox}\nx-b: &b {restart: always}\nx-c: &c\n  <<: [*a, *b]\n  environment: {L: '1'}\nservices:\n  web:\n    image: nginx\n    environment: {A: '1', B: '2'}\n    ports: ['80:80']\n    depends_on: [worker]\n  worker:\n    image: busybox\n  nested:\n    <<: *c\n    command: ['true']\n",
        ),
        (
            "compose.override.yml",
            "x-e: &e {X: '1'}\nservices:\n  web:\n    environment:\n      A: !reset null\n    ports: !override ['81:80']\n    depends_on: !reset []\n  worker: !reset {}\n  nested:\n    environment: !override\n      <<: *e\n      C: '3'\n",
        ),
    ],
)];

/// The home directory both tools are given (a `~` in a mount expands to it).
pub const HOME: &str = "/home/corpus";

pub fn load(
    files: &[PathBuf],
    env: &mut IndexMap<String, String>,
    fill_required: bool,
) -> Result<ComposeProject, String> {
    loop {
        let opts = LoadOptions {
            files: files.to_vec(),
            env: env.clone(),
            ..Default::default()
        };
        match ComposeProject::load(&opts) {
            Ok(p) => return Ok(p),
            Err(StackError::Interpolate { source, .. }) => {
                let homebase_stack::interpolate::InterpolateError::Required { name, .. } = &source
                else {
                    return Err(source.to_string());
                };
                if !fill_required || env.contains_key(name) {
                    return Err(source.to_string());
                }
                env.insert(name.clone(), "x".into());
            }
            Err(e) => return Err(format!("{e:#?}")),
        }
    }
}

/// The env files a project names, created empty (Compose refuses a missing required one).
pub fn touch_env_files(project: &ComposeProject, dir: &Path) {
    for svc in project.services.values() {
        for (f, _) in &svc.env_files {
            let p = dir.join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            if !p.exists() {
                fs::write(&p, "").unwrap();
            }
        }
    }
}

/// One comparison: compose files loaded together in `dir`, with `env` as the environment.
#[derive(Clone)]
pub struct Case {
    pub label: String,
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
    pub env: IndexMap<String, String>,
    /// Real projects' files come without their `.env`: a required variable is given a value.
    pub fill_required: bool,
}

/// What one tool made of a case.
pub enum Outcome<T> {
    Loaded(T),
    Refused(String),
}

pub fn path_env() -> IndexMap<String, String> {
    let mut env = IndexMap::new();
    env.insert(
        "PATH".to_string(),
        std::env::var("PATH").unwrap_or_default(),
    );
    env.insert("HOME".to_string(), HOME.to_string());
    env
}

/// The projects `scripts/corpus` brings (corpus/SOURCES.md): in the first two, the fixtures
/// of Compose and of compose-go, every YAML file is a compose file; in the others, the files
/// whose name says `compose`.
pub const FETCHED: &[&str] = &["compose", "compose-go", "patroni", "coturn"];

/// The corpus `scripts/corpus` brings, copied into `into`; `None` when it is not here.
pub fn fetched_corpus(into: &Path) -> Option<Vec<PathBuf>> {
    let from = std::env::var_os("HB_CORPUS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/homebase-corpus"));
    if !FETCHED.iter().all(|p| from.join(p).is_dir()) {
        return None;
    }
    let ok = Command::new("cp")
        .arg("-a")
        .args(FETCHED.iter().map(|p| from.join(p)))
        .arg(into)
        .status()
        .unwrap()
        .success();
    assert!(
        ok,
        "could not copy {} into {}",
        from.display(),
        into.display()
    );
    let mut files = Vec::new();
    let mut stack = vec![into.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yml" || x == "yaml") {
                let fixtures = FETCHED[..2].iter().any(|f| p.starts_with(into.join(f)));
                let named = p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().contains("compose"));
                if fixtures || named {
                    files.push(p);
                }
            }
        }
    }
    files.sort();
    Some(files)
}

pub fn cases(work: &Path) -> Vec<Case> {
    let mut cases = Vec::new();
    // the shared corpus: real projects' files, each staged alone with its companions
    let corpus = corpus_dir();
    let shared = corpus.as_ref().map(|c| corpus_files(c)).unwrap_or_default();
    for file in shared {
        let Some(corpus) = &corpus else { break };
        let dir = work.join(format!("shared-{}", cases.len()));
        fs::create_dir_all(&dir).unwrap();
        let path = stage(&dir, corpus, &file);
        // a plausible value for every variable the file names (the project's .env is not
        // in the corpus)
        let mut env = path_env();
        guess_vars(&fs::read_to_string(&path).unwrap(), &mut env);
        env.insert("HOME".to_string(), HOME.to_string());
        for (src, _) in COMPANIONS {
            guess_vars(&fs::read_to_string(corpus.join(src)).unwrap(), &mut env);
        }
        cases.push(Case {
            label: file,
            dir,
            files: vec![path],
            env,
            fill_required: true,
        });
    }
    // Compose's and compose-go's fixtures, in place, with only PATH set: what they leave
    // unset is unset for both tools
    let fetched = work.join("fetched");
    fs::create_dir_all(&fetched).unwrap();
    match fetched_corpus(&fetched) {
        Some(files) => {
            for path in files {
                cases.push(Case {
                    label: path.strip_prefix(&fetched).unwrap().display().to_string(),
                    dir: path.parent().unwrap().to_path_buf(),
                    files: vec![path],
                    env: path_env(),
                    fill_required: false,
                });
            }
        }
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must bring the fetched corpus (scripts/corpus)"
            );
            eprintln!("the fetched corpus is not here (run scripts/corpus): only the shared one");
        }
    }
    // documented multi-file sets: an override file over a base
    for (label, set) in SETS {
        let dir = work.join(format!("set-{}", cases.len()));
        fs::create_dir_all(&dir).unwrap();
        let mut files = Vec::new();
        for (name, text) in *set {
            let p = dir.join(name);
            fs::write(&p, text).unwrap();
            files.push(p);
        }
        cases.push(Case {
            label: label.to_string(),
            dir,
            files,
            env: path_env(),
            fill_required: false,
        });
    }
    cases
}
