//! What the compose files reference of the project: build contexts, bind-mount sources,
//! env files, configs and secrets files, each a path checked to stay inside the project.

use std::path::{Component, Path};

use anyhow::Result;
use homebase_stack::ComposeProject;
use serde_norway::Value;

use super::Kind;
use crate::exit::{Exit, coded};

/// What the stack references: directories and files whose tree travels (`roots`; `""` is
/// the whole project) and files that travel whatever git says (`files`: path, kind,
/// required).
pub(super) struct References {
    pub(super) roots: Vec<String>,
    /// Services that mount part of the project writable: (service, source).
    pub(super) writable: Vec<(String, String)>,
    pub(super) files: Vec<(String, Kind, bool)>,
}

pub(super) fn references(compose: &ComposeProject) -> Result<References> {
    let mut refs = References {
        roots: Vec::new(),
        writable: Vec::new(),
        files: Vec::new(),
    };
    let dir = &compose.project_dir;
    for (name, svc) in &compose.services {
        if let Some(b) = svc.raw.get("build") {
            let (ctx, extra) = build_paths(b);
            if let Some(ctx) = ctx {
                refs.roots.push(inside(
                    dir,
                    &ctx,
                    &format!("service `{name}`: build context"),
                )?);
            }
            for (what, p) in extra {
                refs.roots
                    .push(inside(dir, &p, &format!("service `{name}`: {what}"))?);
            }
        }
        if let Some(Value::Sequence(vols)) = svc.raw.get("volumes") {
            for v in vols {
                if let Some(src) = bind_source(v) {
                    let root = inside(dir, &src, &format!("service `{name}`: bind mount"))?;
                    if !bind_read_only(v) {
                        refs.writable.push((name.clone(), src.clone()));
                    }
                    refs.roots.push(root);
                }
            }
        }
        for (path, required) in &svc.env_files {
            let p = inside(dir, path, &format!("service `{name}`: env_file"))?;
            refs.files.push((p, Kind::Secret, *required));
        }
    }
    for (key, kind) in [("secrets", Kind::Secret), ("configs", Kind::File)] {
        if let Some(Value::Mapping(items)) = compose.top.get(key) {
            for (item, def) in items {
                if let Some(f) = def
                    .get("file")
                    .and_then(Value::as_str)
                    .filter(|f| relative(f))
                {
                    let what = format!("{key}.{}: file", item.as_str().unwrap_or("?"));
                    refs.files.push((inside(dir, f, &what)?, kind, true));
                }
            }
        }
    }
    refs.roots.sort();
    refs.roots.dedup();
    Ok(refs)
}

/// A build's local context and its other local paths (a Dockerfile outside the context,
/// additional contexts), as written (relative to the project directory).
pub(super) fn build_paths(b: &Value) -> (Option<String>, Vec<(&'static str, String)>) {
    match b {
        Value::String(s) => (relative(s).then(|| s.clone()), Vec::new()),
        Value::Mapping(m) => {
            let ctx = m
                .get("context")
                .and_then(Value::as_str)
                .unwrap_or(".")
                .to_string();
            let mut extra = Vec::new();
            if let Some(Value::Mapping(more)) = m.get("additional_contexts") {
                for v in more.values() {
                    if let Some(p) = v.as_str().filter(|p| relative(p) && !p.contains(':')) {
                        extra.push(("additional context", p.to_string()));
                    }
                }
            }
            if let Some(df) = m.get("dockerfile").and_then(Value::as_str)
                && relative(&ctx)
            {
                extra.push(("dockerfile", join(&ctx, df)));
            }
            (relative(&ctx).then_some(ctx), extra)
        }
        _ => (None, Vec::new()),
    }
}

/// The source of a bind mount written relative to the project (`./x:/y`, or long syntax
/// `type: bind`).
pub(super) fn bind_source(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if s.starts_with('.') => {
            Some(s.split_once(':').map_or(s.as_str(), |(a, _)| a).to_string())
        }
        Value::Mapping(m) if m.get("type").and_then(Value::as_str) == Some("bind") => m
            .get("source")
            .and_then(Value::as_str)
            .filter(|s| relative(s))
            .map(str::to_string),
        _ => None,
    }
}

/// A bind mount's `:ro` (short syntax) or `read_only: true`.
pub(super) fn bind_read_only(v: &Value) -> bool {
    match v {
        Value::String(s) => s
            .rsplit_once(':')
            .is_some_and(|(_, mode)| mode.split(',').any(|m| m == "ro")),
        Value::Mapping(m) => m.get("read_only").and_then(Value::as_bool) == Some(true),
        _ => false,
    }
}

use homebase_stack::paths::relative;

pub(super) fn join(base: &str, p: &str) -> String {
    if base.is_empty() || base == "." {
        p.to_string()
    } else {
        format!("{base}/{p}")
    }
}

/// `p` folded lexically (`.` dropped, `..` taken back), `/`-separated; `None` when it
/// leaves the directory it is relative to.
pub fn normalize(p: &str) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    for c in Path::new(p).components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.join("/"))
}

/// `p` as a path inside the project, or the error that says it is not.
pub(super) fn inside(dir: &Path, p: &str, what: &str) -> Result<String> {
    normalize(p).ok_or_else(|| {
        coded(
            Exit::BadInput,
            format!(
                "{what} `{p}` is outside the project directory {}: homebase carries only the project's own files to the host; move it inside the project (or make the project directory the common parent)",
                dir.display()
            ),
        )
    })
}

/// Whether `path` is `root` or inside it (`""` is the whole project).
pub(super) fn under(path: &str, root: &str) -> bool {
    root.is_empty()
        || path == root
        || (path.starts_with(root) && path.as_bytes().get(root.len()) == Some(&b'/'))
}
