//! Loading Compose files as Compose does: YAML anchors and merge keys, interpolation,
//! `.env`, `include`, `extends`, several files merged in order, and profiles.
//!
//! The result keeps every service's full definition (`raw`) so that rendering loses nothing
//! it does not understand, next to the typed fields homebase reasons about.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde_norway::{Mapping, Value};

use crate::dotenv;
use crate::error::StackError;
use crate::interpolate::{Vars, interpolate};
use crate::model::Service;

mod merge;
mod yaml;

use merge::*;
pub use yaml::parse_yaml;
use yaml::*;

/// What to load and with which variables.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Compose files, merged in order (later ones override earlier ones).
    pub files: Vec<PathBuf>,
    /// Relative paths and the default `.env` are resolved against it; defaults to the
    /// first file's directory.
    pub project_dir: Option<PathBuf>,
    /// The process environment; it wins over `.env` files.
    pub env: Vars,
    /// `--env-file`s; when empty, `<project_dir>/.env` is read if it exists.
    pub env_files: Vec<PathBuf>,
    /// Enabled profiles (`--profile` and `COMPOSE_PROFILES`).
    pub profiles: Vec<String>,
}

/// A loaded, merged, interpolated Compose project.
#[derive(Debug, Clone)]
pub struct ComposeProject {
    /// The top-level `name`, if any file sets one.
    pub name: Option<String>,
    /// Active services, in file order.
    pub services: IndexMap<String, Service>,
    /// Services left out because none of their profiles is enabled.
    pub inactive: Vec<String>,
    /// Top-level keys other than `services` (`volumes`, `networks`, `secrets`, `configs`, `x-*`).
    pub top: Mapping,
    /// The variables interpolation used.
    pub vars: Vars,
    pub project_dir: PathBuf,
}

const MAX_INCLUDE_DEPTH: usize = 16;

impl ComposeProject {
    pub fn load(opts: &LoadOptions) -> Result<ComposeProject, StackError> {
        let first = opts.files.first().ok_or_else(|| {
            StackError::invalid(
                Path::new("homebase.toml"),
                "project.compose",
                "no compose file given",
            )
        })?;
        let project_dir = match &opts.project_dir {
            Some(d) => d.clone(),
            None => parent_dir(first),
        };
        let vars = load_vars(&project_dir, &opts.env_files, &opts.env)?;
        let mut merged = Mapping::new();
        // `-f` files are relative to where homebase runs, as in Compose.
        for file in &opts.files {
            let doc = load_file(file, &vars, 0)?;
            merge_documents(&mut merged, doc);
        }
        finish(merged, vars, project_dir, first, &opts.profiles)
    }
}

fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn absolute(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn read(path: &Path) -> Result<String, StackError> {
    std::fs::read_to_string(path).map_err(|source| StackError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Process environment over the env files (later env files over earlier ones).
fn load_vars(project_dir: &Path, env_files: &[PathBuf], env: &Vars) -> Result<Vars, StackError> {
    let mut files: Vec<PathBuf> = env_files.iter().map(|f| absolute(project_dir, f)).collect();
    let default = project_dir.join(".env");
    let explicit = !files.is_empty();
    if !explicit && default.is_file() {
        files.push(default);
    }
    let mut vars = Vars::new();
    for f in files {
        let text = read(&f)?;
        let parsed = dotenv::parse(&text, env).map_err(|source| StackError::Dotenv {
            path: f.clone(),
            source,
        })?;
        vars.extend(parsed);
    }
    for (k, v) in env {
        vars.insert(k.clone(), v.clone());
    }
    Ok(vars)
}

/// Service names as Compose accepts them (`[a-zA-Z0-9._-]+`, starting with a letter or
/// digit): a name is used in container names, DNS and shell scripts on the host.
fn check_service_name(name: &str, path: &Path) -> Result<(), StackError> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        return Ok(());
    }
    Err(StackError::invalid(
        path,
        format!("services.{}", name.escape_debug()),
        "a service name may use letters, digits, `.`, `_` and `-` only, and must start with \
         a letter or digit (Compose refuses it too); rename the service",
    ))
}

/// Loads one file: parse, interpolate, resolve its `include`s and `extends`, normalize.
fn load_file(path: &Path, vars: &Vars, depth: usize) -> Result<Mapping, StackError> {
    if depth > MAX_INCLUDE_DEPTH {
        return Err(StackError::invalid(
            path,
            "include",
            "includes nest more than 16 deep; is there a cycle?",
        ));
    }
    let text = read(path)?;
    let mut doc = parse_yaml(path, &text)?;
    interpolate_mapping(&mut doc, vars, path, &mut Vec::new())?;
    let dir = parent_dir(path);

    let includes = doc.remove("include");
    let mut services = take_services(&mut doc, path)?;
    for (name, def) in services.iter_mut() {
        let name = key_str(name, path)?;
        normalize_service(def, &name, path, vars)?;
    }
    // extends is resolved on the plain definitions; a tagged one keeps its tag for the merge
    let mut tags = IndexMap::new();
    let mut snapshot = Mapping::new();
    for (name, def) in services.iter() {
        let name = key_str(name, path)?;
        let tag = merge_tag(def);
        let plain = match def {
            Value::Tagged(t) => t.value.clone(),
            d => d.clone(),
        };
        if let Some(tag) = tag {
            tags.insert(name.clone(), (tag, def.clone()));
        }
        snapshot.insert(Value::String(name), plain);
    }
    let mut resolved = Mapping::new();
    for (name, _) in snapshot.iter() {
        let name = key_str(name, path)?;
        let value = match tags.get(&name) {
            Some((MergeTag::Reset, original)) => original.clone(),
            Some((MergeTag::Override, original)) => {
                let mut tagged = original.clone();
                if let Value::Tagged(t) = &mut tagged {
                    t.value = Value::Mapping(resolve_extends(
                        path,
                        &snapshot,
                        &name,
                        vars,
                        &mut Vec::new(),
                    )?);
                }
                tagged
            }
            None => Value::Mapping(resolve_extends(
                path,
                &snapshot,
                &name,
                vars,
                &mut Vec::new(),
            )?),
        };
        resolved.insert(Value::String(name), value);
    }
    let mut out = Mapping::new();
    if let Some(inc) = includes {
        for entry in include_entries(&inc, path)? {
            let mut inc_vars = vars.clone();
            if let Some(env_file) = &entry.env_file {
                let extra = load_vars(&dir, std::slice::from_ref(env_file), &Vars::new())?;
                for (k, v) in extra {
                    inc_vars.entry(k).or_insert(v);
                }
            }
            let mut sub = Mapping::new();
            // the included files' paths are relative to their project directory
            let prefix = entry.project_directory.clone().unwrap_or_else(|| {
                entry
                    .paths
                    .first()
                    .and_then(|p| p.parent())
                    .map(Path::to_path_buf)
                    .unwrap_or_default()
            });
            for p in &entry.paths {
                let file = absolute(&dir, p);
                let mut doc = load_file(&file, &inc_vars, depth + 1)?;
                crate::paths::rebase_document(&mut doc, &prefix);
                merge_documents(&mut sub, doc);
            }
            if let Some(Value::Mapping(sub_services)) = sub.get("services") {
                for (name, _) in sub_services {
                    if resolved.contains_key(name) {
                        let name = key_str(name, path)?;
                        return Err(StackError::invalid(
                            path,
                            format!("services.{name}"),
                            format!(
                                "service `{name}` is also defined by the included file `{}`; Compose refuses the conflict: rename one, or use extends instead of include",
                                entry
                                    .paths
                                    .first()
                                    .map(|p| p.display().to_string())
                                    .unwrap_or_default()
                            ),
                        ));
                    }
                }
            }
            merge_documents(&mut out, sub);
        }
    }
    let mut own = doc;
    own.insert(Value::from("services"), Value::Mapping(resolved));
    merge_own(&mut out, own);
    Ok(out)
}

fn take_services(doc: &mut Mapping, path: &Path) -> Result<Mapping, StackError> {
    match doc.remove("services") {
        None | Some(Value::Null) => Ok(Mapping::new()),
        Some(Value::Mapping(m)) => Ok(m),
        Some(_) => Err(StackError::invalid(
            path,
            "services",
            "`services` must be a mapping of service names to definitions",
        )),
    }
}

fn key_str(v: &Value, path: &Path) -> Result<String, StackError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(StackError::invalid(
            path,
            "services",
            "service names must be strings",
        )),
    }
}

struct IncludeEntry {
    paths: Vec<PathBuf>,
    env_file: Option<PathBuf>,
    /// What the included files' relative paths are relative to (default: the first file's
    /// directory), as written (relative to the including file).
    project_directory: Option<PathBuf>,
}

fn include_entries(v: &Value, path: &Path) -> Result<Vec<IncludeEntry>, StackError> {
    let bad = || {
        StackError::invalid(
            path,
            "include",
            "expected a list of paths or of `{path, env_file}` mappings",
        )
    };
    let Value::Sequence(items) = v else {
        return Err(bad());
    };
    items
        .iter()
        .map(|item| match item {
            Value::String(s) => Ok(IncludeEntry {
                paths: vec![PathBuf::from(s)],
                env_file: None,
                project_directory: None,
            }),
            Value::Mapping(m) => {
                let paths = match m.get("path") {
                    Some(Value::String(s)) => vec![PathBuf::from(s)],
                    Some(Value::Sequence(seq)) => seq
                        .iter()
                        .map(|p| p.as_str().map(PathBuf::from).ok_or_else(bad))
                        .collect::<Result<_, _>>()?,
                    _ => return Err(bad()),
                };
                let env_file = match m.get("env_file") {
                    Some(Value::String(s)) => Some(PathBuf::from(s)),
                    Some(Value::Sequence(seq)) => {
                        seq.first().and_then(Value::as_str).map(PathBuf::from)
                    }
                    _ => None,
                };
                let project_directory = m
                    .get("project_directory")
                    .and_then(Value::as_str)
                    .map(PathBuf::from);
                Ok(IncludeEntry {
                    paths,
                    env_file,
                    project_directory,
                })
            }
            _ => Err(bad()),
        })
        .collect()
}

/// Resolves `extends` for service `name` of the file at `path` (whose services are `services`).
fn resolve_extends(
    path: &Path,
    services: &Mapping,
    name: &str,
    vars: &Vars,
    chain: &mut Vec<String>,
) -> Result<Mapping, StackError> {
    let link = format!("{}:{name}", path.display());
    if chain.contains(&link) {
        let mut names: Vec<String> = chain.iter().map(|l| short_link(l)).collect();
        names.push(short_link(&link));
        return Err(StackError::ExtendsCycle { chain: names });
    }
    let Some(Value::Mapping(def)) = services.get(name) else {
        let known: Vec<&str> = services.keys().filter_map(Value::as_str).collect();
        let hint = crate::error::did_you_mean(name, known.iter().copied())
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        return Err(StackError::invalid(
            path,
            format!("services.{name}"),
            format!("`extends` names service `{name}`, which this file does not define{hint}"),
        ));
    };
    let mut def = def.clone();
    let Some(ext) = def.remove("extends") else {
        return Ok(def);
    };
    let (base_service, base_file) = match &ext {
        Value::String(s) => (s.clone(), None),
        Value::Mapping(m) => {
            let service = m.get("service").and_then(Value::as_str).ok_or_else(|| {
                StackError::invalid(
                    path,
                    format!("services.{name}.extends"),
                    "`extends` needs a `service`",
                )
            })?;
            (
                service.to_string(),
                m.get("file").and_then(Value::as_str).map(PathBuf::from),
            )
        }
        _ => {
            return Err(StackError::invalid(
                path,
                format!("services.{name}.extends"),
                "`extends` must be a service name or a `{service, file}` mapping",
            ));
        }
    };
    chain.push(link);
    let base = match base_file {
        None => resolve_extends(path, services, &base_service, vars, chain)?,
        Some(f) => {
            let file = absolute(&parent_dir(path), &f);
            let text = read(&file)?;
            let mut doc = parse_yaml(&file, &text)?;
            interpolate_mapping(&mut doc, vars, &file, &mut Vec::new())?;
            let mut other = take_services(&mut doc, &file)?;
            for (n, d) in other.iter_mut() {
                let n = key_str(n, &file)?;
                normalize_service(d, &n, &file, vars)?;
            }
            let mut base = resolve_extends(&file, &other, &base_service, vars, chain)?;
            // its paths are relative to its own file
            crate::paths::rebase_service(&mut base, f.parent().unwrap_or(Path::new("")));
            base
        }
    };
    chain.pop();
    let mut merged = base;
    merge_mapping(&mut merged, def);
    Ok(merged)
}

fn short_link(link: &str) -> String {
    match link.rsplit_once(':') {
        Some((file, service)) => {
            let f = Path::new(file)
                .file_name()
                .map(|f| f.to_string_lossy().to_string())
                .unwrap_or_default();
            format!("{f}:{service}")
        }
        None => link.to_string(),
    }
}

fn interpolate_mapping(
    m: &mut Mapping,
    vars: &Vars,
    path: &Path,
    at: &mut Vec<String>,
) -> Result<(), StackError> {
    for (k, v) in m.iter_mut() {
        at.push(
            k.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("{k:?}")),
        );
        interpolate_value(v, vars, path, at)?;
        at.pop();
    }
    Ok(())
}

fn interpolate_value(
    v: &mut Value,
    vars: &Vars,
    path: &Path,
    at: &mut Vec<String>,
) -> Result<(), StackError> {
    match v {
        Value::String(s) if s.contains('$') => {
            *s = interpolate(s, vars).map_err(|source| StackError::Interpolate {
                path: path.to_path_buf(),
                at: at.join("."),
                source,
            })?;
        }
        Value::Mapping(m) => interpolate_mapping(m, vars, path, at)?,
        Value::Sequence(seq) => {
            for (i, item) in seq.iter_mut().enumerate() {
                at.push(i.to_string());
                interpolate_value(item, vars, path, at)?;
                at.pop();
            }
        }
        Value::Tagged(t) => interpolate_value(&mut t.value, vars, path, at)?,
        _ => {}
    }
    Ok(())
}

fn finish(
    mut merged: Mapping,
    vars: Vars,
    project_dir: PathBuf,
    first_file: &Path,
    profiles: &[String],
) -> Result<ComposeProject, StackError> {
    // Errors after merging name the first file: the project's main compose file.
    let path = first_file.to_path_buf();
    let name = merged.remove("name").and_then(|v| scalar_string(&v));
    merged.remove("version");
    let services_raw = take_services(&mut merged, &path)?;
    let enabled: BTreeSet<&str> = profiles.iter().map(String::as_str).collect();
    let all = enabled.contains("*");
    let mut services = IndexMap::new();
    let mut inactive = Vec::new();
    for (k, v) in services_raw {
        let name = key_str(&k, &path)?;
        check_service_name(&name, &path)?;
        let Value::Mapping(def) = v else { continue };
        let svc = Service::from_raw(&name, def, &path)?;
        // `profiles: ["", "x"]`: the empty profile is always enabled, as in Compose
        let active = svc.profiles.is_empty()
            || svc.profiles.iter().any(String::is_empty)
            || all
            || svc.profiles.iter().any(|p| enabled.contains(p.as_str()));
        if active {
            services.insert(name, svc);
        } else {
            inactive.push(name);
        }
    }
    for svc in services.values() {
        crate::validate::volumes(svc, &path)?;
    }
    // depends_on must name known services; one that names an inactive service is an error in Compose too
    for svc in services.values() {
        for dep in svc.depends_on.keys() {
            if !services.contains_key(dep) && !svc.optional_deps.contains(dep) {
                let why = if inactive.contains(dep) {
                    format!("`{dep}` is only in an inactive profile; enable its profile")
                } else {
                    let hint = crate::error::did_you_mean(dep, services.keys().map(String::as_str))
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_default();
                    format!("there is no service `{dep}`{hint}")
                };
                return Err(StackError::invalid(
                    &path,
                    format!("services.{}.depends_on", svc.name),
                    why,
                ));
            }
        }
    }
    crate::validate::no_cycles(&services, &path)?;
    Ok(ComposeProject {
        name,
        services,
        inactive,
        top: merged,
        vars,
        project_dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn project(files: &[(&str, &str)], env: &[(&str, &str)]) -> Result<ComposeProject, StackError> {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let p = dir.path().join(name);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }
        let opts = LoadOptions {
            files: vec![dir.path().join(files[0].0)],
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        let r = ComposeProject::load(&opts);
        drop(dir);
        r
    }

    #[test]
    fn anchors_merge_keys_and_interpolation() {
        let p = project(
            &[
                (
                    "compose.yml",
                    "x-common: &common\n  restart: always\n  environment:\n    A: '1'\nservices:\n  web:\n    <<: *common\n    image: ${IMG:-nginx}:${TAG-latest}\n    environment:\n      - B=${B:-two}\n      - PASS\n",
                ),
                (".env", "TAG=1.25\n"),
            ],
            &[("PASS", "secret")],
        )
        .unwrap();
        let web = &p.services["web"];
        assert_eq!(web.image.as_deref(), Some("nginx:1.25"));
        assert_eq!(
            web.environment.get("B").and_then(|v| v.as_deref()),
            Some("two")
        );
        assert_eq!(
            web.environment.get("PASS").and_then(|v| v.as_deref()),
            Some("secret")
        );
        assert_eq!(
            web.raw.get("restart").and_then(Value::as_str),
            Some("always")
        );
    }

    #[test]
    fn extends_in_same_and_other_file() {
        let p = project(
            &[
                (
                    "compose.yml",
                    "services:\n  base:\n    image: busybox\n    mem_limit: 64m\n  child:\n    extends: base\n    command: [sh]\n  remote:\n    extends:\n      file: other/common.yml\n      service: db\n    environment:\n      X: y\n",
                ),
                ("other/common.yml", "services:\n  db:\n    image: postgres:17\n    environment:\n      POSTGRES_DB: app\n"),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(p.services["child"].image.as_deref(), Some("busybox"));
        assert_eq!(p.services["child"].limit.map(|b| b.0), Some(64 << 20));
        let remote = &p.services["remote"];
        assert_eq!(remote.image.as_deref(), Some("postgres:17"));
        assert_eq!(remote.environment.len(), 2);
    }

    #[test]
    fn paths_of_extended_and_included_files_follow_their_file_and_mounts_merge_by_target() {
        let p = project(
            &[
                (
                    "compose.yml",
                    "include:\n  - lib/inc.yml\nservices:\n  web:\n    extends:\n      file: other/base.yml\n      service: base\n    volumes: ['./mine:/data']\n",
                ),
                (
                    "other/base.yml",
                    "services:\n  base:\n    image: busybox\n    env_file: [./base.env]\n    volumes: ['./theirs:/data', './logs:/logs']\n",
                ),
                ("other/base.env", "FROM_BASE=1\n"),
                ("lib/inc.yml", "services:\n  inc:\n    image: busybox\n    build: .\n"),
            ],
            &[],
        )
        .unwrap();
        let web = &p.services["web"];
        assert_eq!(web.env_files, vec![("./other/base.env".to_string(), true)]);
        let vols = serde_norway::to_string(web.raw.get("volumes").unwrap()).unwrap();
        // the extending service's mount at /data replaces the base's; the base's other one
        // keeps its own directory
        assert_eq!(vols, "- ./mine:/data\n- ./other/logs:/logs\n");
        assert_eq!(
            p.services["inc"].raw.get("build").and_then(Value::as_str),
            Some("./lib")
        );
    }

    #[test]
    fn circular_extends_is_named() {
        let e = project(
            &[(
                "compose.yml",
                "services:\n  a:\n    extends: b\n  b:\n    extends: a\n",
            )],
            &[],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "circular `extends`: compose.yml:a -> compose.yml:b -> compose.yml:a"
        );
    }

    #[test]
    fn include_and_conflict() {
        let p = project(
            &[
                ("compose.yml", "include:\n  - sub/base.yml\nservices:\n  app:\n    image: app\n    depends_on: [db]\n"),
                ("sub/base.yml", "services:\n  db:\n    image: postgres\nvolumes:\n  data: {}\n"),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(p.services.keys().collect::<Vec<_>>(), ["db", "app"]);
        assert!(p.top.contains_key("volumes"));
        let e = project(
            &[
                (
                    "compose.yml",
                    "include:\n  - base.yml\nservices:\n  db:\n    image: app\n",
                ),
                ("base.yml", "services:\n  db:\n    image: postgres\n"),
            ],
            &[],
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("service `db` is also defined by the included file `base.yml`"),
            "{e}"
        );
    }

    #[test]
    fn profiles_leave_services_out() {
        let p = project(
            &[(
                "compose.yml",
                "services:\n  a:\n    image: a\n  dbg:\n    image: b\n    profiles: [debug]\n",
            )],
            &[],
        )
        .unwrap();
        assert_eq!(p.services.len(), 1);
        assert_eq!(p.inactive, ["dbg"]);
    }

    /// `!reset` and `!override` in an override file, and merge keys nested through anchors,
    /// as `docker compose config` reads them (checked against Compose v2.2x).
    #[test]
    fn merge_tags_and_nested_merge_keys() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("base.yml"),
            "x-a: &a {image: busybox}\nx-b: &b {restart: always}\nx-c: &c\n  <<: [*a, *b]\n  labels: {l: '1'}\nservices:\n  web:\n    image: nginx\n    environment: {A: '1', B: '2'}\n    ports: ['80:80']\n    volumes: ['/tmp:/data']\n  worker:\n    image: busybox\n  nested:\n    <<: *c\n    command: ['true']\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("over.yml"),
            "x-e: &e {X: '1'}\nservices:\n  web:\n    environment:\n      A: !reset null\n    ports: !override ['81:80']\n    volumes: !reset []\n  worker: !reset {}\n  nested:\n    environment: !override\n      <<: *e\n      C: '3'\n",
        )
        .unwrap();
        let p = ComposeProject::load(&LoadOptions {
            files: vec![dir.path().join("base.yml"), dir.path().join("over.yml")],
            ..Default::default()
        })
        .unwrap();
        let names: Vec<&str> = p.services.keys().map(String::as_str).collect();
        assert_eq!(names, ["web", "nested"]);
        let web = &p.services["web"];
        assert_eq!(
            web.environment.keys().collect::<Vec<_>>(),
            ["B"],
            "A was reset"
        );
        assert_eq!(web.ports.len(), 1);
        assert_eq!(web.ports[0].published.as_deref(), Some("81"));
        assert!(web.raw.get("volumes").is_none(), "{:?}", web.raw);
        let nested = &p.services["nested"];
        assert_eq!(nested.image.as_deref(), Some("busybox"));
        assert_eq!(
            nested.raw.get("restart").and_then(Value::as_str),
            Some("always")
        );
        let mut env: Vec<_> = nested.environment.iter().collect();
        env.sort();
        assert_eq!(
            env,
            [
                (&"C".to_string(), &Some("3".to_string())),
                (&"X".to_string(), &Some("1".to_string()))
            ]
        );
        // in a single file a tag is just applied
        fs::write(
            dir.path().join("one.yml"),
            "services:\n  s:\n    image: busybox\n    environment: !override {K: v}\n    labels: !reset {}\n",
        )
        .unwrap();
        let p = ComposeProject::load(&LoadOptions {
            files: vec![dir.path().join("one.yml")],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(p.services["s"].environment.len(), 1);
        assert!(p.services["s"].raw.get("labels").is_none());
    }

    #[test]
    fn several_files_merge_in_order() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.yml"), "services:\n  web:\n    image: nginx\n    ports: ['80:80']\n    command: [a, b]\n    environment: {A: '1'}\n").unwrap();
        fs::write(dir.path().join("b.yml"), "services:\n  web:\n    ports: ['443:443']\n    command: [c]\n    environment: [B=2]\n    mem_limit: 1g\n").unwrap();
        let p = ComposeProject::load(&LoadOptions {
            files: vec![dir.path().join("a.yml"), dir.path().join("b.yml")],
            ..Default::default()
        })
        .unwrap();
        let web = &p.services["web"];
        assert_eq!(web.ports.len(), 2);
        assert_eq!(
            web.raw.get("command"),
            Some(&serde_norway::from_str::<Value>("[c]").unwrap())
        );
        assert_eq!(web.environment.len(), 2);
        assert_eq!(web.limit.map(|b| b.0), Some(1 << 30));
    }

    #[test]
    fn malformed_yaml_names_line_and_column() {
        let e = project(
            &[("compose.yml", "services:\n  web:\n    image: [unclosed\n")],
            &[],
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("compose.yml:"), "{msg}");
        assert!(
            matches!(e, StackError::Yaml { line, .. } if line > 0),
            "{msg}"
        );
    }
}
