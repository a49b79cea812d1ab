//! Relative paths of included and extended files, as Compose resolves them: a path written in
//! a file that another one `include`s or `extends` from is relative to that file's directory
//! (or the include's `project_directory`), not to the project's. Rebasing keeps them relative
//! (to the including file's directory), so that a rendered project still works wherever its
//! directory is copied.

use std::path::{Component, Path, PathBuf};

use serde_norway::{Mapping, Value};

/// `prefix` joined with `p`, `.` parts dropped and `..` folded where it can be, written
/// `./…` or `../…` so that a volume's short syntax still reads it as a path.
fn join(prefix: &Path, p: &str) -> String {
    let joined = prefix.join(p);
    let mut parts: Vec<Component> = Vec::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(parts.last(), Some(Component::Normal(_))) => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let out: PathBuf = parts.iter().collect();
    let s = out.to_string_lossy().to_string();
    if out.is_absolute() || s.starts_with("..") {
        s
    } else if s.is_empty() {
        ".".to_string()
    } else {
        format!("./{s}")
    }
}

/// Whether `p` is a local relative path (not absolute, not `~`, not a URL or a git remote).
pub fn relative(p: &str) -> bool {
    !(p.is_empty()
        || p.starts_with('/')
        || p.starts_with('~')
        || p.starts_with('$')
        || p.contains("://")
        || p.starts_with("git@")
        || p.starts_with("github.com/")
        || p.as_bytes().get(1..3) == Some(b":\\"))
}

fn rebase_str(v: &mut Value, prefix: &Path) {
    if let Value::String(s) = v
        && relative(s)
    {
        *s = join(prefix, s);
    }
}

/// A service's relative paths (`env_file`, bind mounts, `build` context, `label_file`)
/// rebased onto `prefix`.
pub fn rebase_service(def: &mut Mapping, prefix: &Path) {
    if prefix.as_os_str().is_empty() || prefix == Path::new(".") {
        return;
    }
    for key in ["env_file", "label_file"] {
        match def.get_mut(key) {
            Some(Value::Sequence(items)) => {
                for item in items {
                    match item {
                        Value::Mapping(m) => {
                            if let Some(p) = m.get_mut("path") {
                                rebase_str(p, prefix);
                            }
                        }
                        other => rebase_str(other, prefix),
                    }
                }
            }
            Some(v) => rebase_str(v, prefix),
            None => {}
        }
    }
    match def.get_mut("build") {
        Some(Value::Mapping(b)) => {
            if let Some(c) = b.get_mut("context") {
                rebase_str(c, prefix);
            }
        }
        Some(v) => rebase_str(v, prefix),
        None => {}
    }
    if let Some(Value::Sequence(vols)) = def.get_mut("volumes") {
        for v in vols {
            match v {
                Value::String(s) if s.starts_with('.') => {
                    let (src, rest) = s.split_once(':').unwrap_or((s.as_str(), ""));
                    let src = join(prefix, src);
                    *s = if rest.is_empty() {
                        src
                    } else {
                        format!("{src}:{rest}")
                    };
                }
                Value::Mapping(m) => {
                    let bind = m.get("type").and_then(Value::as_str) == Some("bind");
                    if let Some(src) = m.get_mut("source").filter(|_| bind) {
                        rebase_str(src, prefix);
                    }
                }
                _ => {}
            }
        }
    }
}

/// An included file's relative paths: its services' and its secrets' and configs' `file`.
pub fn rebase_document(doc: &mut Mapping, prefix: &Path) {
    if let Some(Value::Mapping(services)) = doc.get_mut("services") {
        for def in services.values_mut() {
            let def = match def {
                Value::Tagged(t) => &mut t.value,
                d => d,
            };
            if let Value::Mapping(def) = def {
                rebase_service(def, prefix);
            }
        }
    }
    for key in ["secrets", "configs"] {
        if let Some(Value::Mapping(items)) = doc.get_mut(key) {
            for item in items.values_mut() {
                if let Value::Mapping(m) = item
                    && let Some(f) = m.get_mut("file")
                {
                    rebase_str(f, prefix);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_file_that_wrote_them() {
        let mut def: Mapping = serde_norway::from_str(
            "env_file: [./extra.env, {path: x.env, required: false}]\nbuild: .\nvolumes: ['./data:/data:ro', 'named:/n', '/abs:/abs', {type: bind, source: ../up, target: /u}]\n",
        )
        .unwrap();
        rebase_service(&mut def, Path::new("./subdir"));
        let s = serde_norway::to_string(&def).unwrap();
        assert!(s.contains("- ./subdir/extra.env"), "{s}");
        assert!(s.contains("path: ./subdir/x.env"), "{s}");
        assert!(s.contains("build: ./subdir"), "{s}");
        assert!(s.contains("./subdir/data:/data:ro"), "{s}");
        assert!(s.contains("named:/n") && s.contains("/abs:/abs"), "{s}");
        assert!(s.contains("source: ./up"), "{s}");
        assert_eq!(join(Path::new("../other"), "./x"), "../other/x");
        assert_eq!(join(Path::new("a"), ".."), ".");
    }
}
