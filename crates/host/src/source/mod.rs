//! The project's own files, as a deploy carries them to the host: the files the stack
//! references (build contexts, relative bind-mount sources, env files, configs and secrets
//! files), each named by its content, and the images the host builds from them.
//!
//! What is included: in a git checkout, the files git tracks plus the untracked ones it
//! does not ignore; otherwise everything under the project directory less the root
//! `.dockerignore`'s patterns. Never `.git/`, never anything outside the project directory
//! (a path or a symlink that leaves it is refused). Env files, configs and secrets files the
//! stack names travel even when git ignores them (they usually hold secrets), private (0600)
//! on the host.
//!
//! The host keeps every file once, by content (`objects/<sha256>[.x|.s]`); a release lists
//! its files in a manifest (`files`: one `KIND OBJECT PATH` line each) that the release job
//! lays out in the project's live tree (`tree/`, Compose's project directory there).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use homebase_stack::ComposeProject;
use homebase_stack::units::Bytes;
use serde_norway::Value;
use sha2::{Digest, Sha256};

use crate::exit::{Exit, coded};

mod files;
mod refs;

use files::{candidates, dockerignore, entry, hex};
pub use refs::normalize;
use refs::{build_paths, inside, join, references, under};

/// How a file is laid out on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A plain file (0644).
    File,
    /// An executable (0755).
    Exec,
    /// A secret the stack names (an env file, a secrets file): 0600.
    Secret,
    /// A symlink that stays inside the project; its object holds the target.
    Link,
}

impl Kind {
    fn letter(self) -> char {
        match self {
            Kind::File => 'f',
            Kind::Exec => 'x',
            Kind::Secret => 's',
            Kind::Link => 'l',
        }
    }
}

/// One file of the tree.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Relative to the project directory, `/`-separated.
    pub path: String,
    pub kind: Kind,
    /// Its object's name on the host: the content's SHA-256, `.x` for an executable, `.s`
    /// for a secret.
    pub object: String,
    pub size: u64,
    /// Where it is on the laptop.
    pub local: PathBuf,
}

/// A service whose image the host builds from the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    /// The compose file on the host that builds it: `compose.yml`, or `loops.yml` for a
    /// loop's image (service `loop-<name>`).
    pub file: &'static str,
    /// The service, or the loop's name.
    pub service: String,
    /// The loop's name when it is a loop's image.
    pub agent_loop: Option<String>,
    /// Its `build:` as Compose reads it (contexts relative to the project directory).
    pub def: Value,
    /// `homebase/<project>-<service>:<hash of its inputs>`: the same inputs, the same tag,
    /// so a rollback or an unchanged service needs no build.
    pub image: String,
}

/// The files a deploy carries and the images the host builds.
#[derive(Debug, Clone, Default)]
pub struct Source {
    pub entries: Vec<Entry>,
    pub builds: Vec<Build>,
    /// Whether the list came from git (else from a walk less `.dockerignore`).
    pub from_git: bool,
    /// What a user should know (a service that mounts the deployed files writable).
    pub warnings: Vec<String>,
}

impl Source {
    /// Reads the project's referenced files and checks them (outside the project, symlinks
    /// that leave it, a tree over `max_size`, builds without their Dockerfile).
    pub fn collect(
        compose: &ComposeProject,
        config: &homebase_stack::config::Config,
        config_dir: &Path,
    ) -> Result<Source> {
        let project = config.project.name.as_str();
        let max_size = config.files.max_size;
        let dir = &compose.project_dir;
        let loops = loop_builds(compose, config, config_dir)?;
        let mut refs = references(compose)?;
        for (name, b) in &loops {
            let (ctx, extra) = build_paths(b);
            for p in ctx.into_iter().chain(extra.into_iter().map(|(_, p)| p)) {
                refs.roots
                    .push(inside(dir, &p, &format!("loops.{name}.build"))?);
            }
        }
        let (candidates, from_git) = candidates(dir)?;
        let mut chosen: BTreeMap<String, Kind> = BTreeMap::new();
        for path in candidates {
            if refs.roots.iter().any(|r| under(&path, r)) {
                chosen.insert(path, Kind::File);
            }
        }
        // named files travel even when git ignores them; a missing optional one does not
        for (path, kind, required) in &refs.files {
            if dir.join(path).exists() || !required {
                if dir.join(path).exists() {
                    chosen.insert(path.clone(), *kind);
                }
            } else {
                return Err(coded(
                    Exit::BadInput,
                    format!(
                        "`{}` is named by the compose file but does not exist; create it or remove the reference",
                        dir.join(path).display()
                    ),
                ));
            }
        }
        let mut entries = Vec::with_capacity(chosen.len());
        for (path, kind) in chosen {
            if let Some(e) = entry(dir, &path, kind)? {
                entries.push(e);
            }
        }
        check_size(&entries, max_size)?;
        let mut builds = builds(compose, project, &entries)?;
        for (name, b) in &loops {
            builds.push(build(
                compose,
                project,
                &entries,
                &format!("loop-{name}"),
                b,
            )?);
            if let Some(last) = builds.last_mut() {
                last.file = "loops.yml";
                last.agent_loop = Some(name.clone());
            }
        }
        // a synced directory a container can write: a place for data, not for agents
        let warnings = refs
            .writable
            .iter()
            .filter(|(_, src)| {
                let root = normalize(src).unwrap_or_default();
                entries.iter().any(|e| under(&e.path, &root))
            })
            .map(|(svc, src)| {
                format!(
                    "service `{svc}` mounts `{src}` of the project writable: files it changes there are set aside at the next deploy, not kept; an agent that writes code belongs in a loop with `workspace = \"git\"`"
                )
            })
            .collect();
        Ok(Source {
            entries,
            builds,
            from_git,
            warnings,
        })
    }

    /// The bytes of every file together.
    pub fn bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }

    /// The release's manifest: `KIND OBJECT PATH` a line, sorted by path.
    pub fn manifest(&self) -> String {
        self.entries
            .iter()
            .map(|e| format!("{} {} {}\n", e.kind.letter(), e.object, e.path))
            .collect()
    }

    /// The release's builds: `FILE SERVICE IMAGE` a line.
    pub fn builds_file(&self) -> String {
        self.builds
            .iter()
            .map(|b| format!("{} {} {}\n", b.file, b.service, b.image))
            .collect()
    }

    /// Swarm mode: the stack file keeps no `build:`, so the services' builds go in a file of
    /// their own (`build.yml`, never started), which the builds file names instead.
    pub fn for_swarm(&self, project: &str) -> Result<(Self, Option<String>)> {
        let mut out = self.clone();
        for b in out.builds.iter_mut().filter(|b| b.agent_loop.is_none()) {
            b.file = "build.yml";
        }
        let yaml = build_file(&out.builds, "build.yml", project)?;
        Ok((out, yaml))
    }

    /// The compose file that builds the loops' images on the host (`loops.yml`; never
    /// started), or `None` when no loop is built.
    pub fn loops_compose(&self, project: &str) -> Result<Option<String>> {
        build_file(&self.builds, "loops.yml", project)
    }

    /// The entries whose object the host lacks (each object once).
    pub fn missing<'a>(&'a self, have: &std::collections::HashSet<String>) -> Vec<&'a Entry> {
        let mut seen = std::collections::HashSet::new();
        self.entries
            .iter()
            .filter(|e| !have.contains(&e.object) && seen.insert(e.object.clone()))
            .collect()
    }

    /// The compose project with each built service's image set to its tag (what render
    /// writes and `up` runs).
    pub fn tagged(&self, compose: &ComposeProject) -> ComposeProject {
        let mut out = compose.clone();
        for b in &self.builds {
            if let Some(svc) = out.services.get_mut(&b.service) {
                svc.raw
                    .insert("image".into(), Value::String(b.image.clone()));
                svc.image = Some(b.image.clone());
            }
        }
        out
    }
}

/// The change from manifest `base` to `new`: `+ KIND OBJECT PATH` for what is new or
/// changed, `- PATH` for what went (`host::tree`'s `patch_manifest` applies it).
pub fn manifest_delta(base: &str, new: &str) -> String {
    fn parse(m: &str) -> BTreeMap<&str, &str> {
        m.lines()
            .filter_map(|l| {
                let mut it = l.splitn(3, ' ');
                let (k, o, p) = (it.next()?, it.next()?, it.next()?);
                Some((p, &l[..k.len() + 1 + o.len()]))
            })
            .collect()
    }
    let (a, b) = (parse(base), parse(new));
    let mut out = String::new();
    for (p, ko) in &b {
        if a.get(p) != Some(ko) {
            out.push_str(&format!("+ {ko} {p}\n"));
        }
    }
    for p in a.keys().filter(|p| !b.contains_key(*p)) {
        out.push_str(&format!("- {p}\n"));
    }
    out
}

/// A compose file of the builds that `file` names (`build:` and the tag; never started),
/// or `None` when there are none.
fn build_file(builds: &[Build], file: &str, project: &str) -> Result<Option<String>> {
    let mut services = serde_norway::Mapping::new();
    for b in builds.iter().filter(|b| b.file == file) {
        let mut svc = serde_norway::Mapping::new();
        svc.insert("build".into(), b.def.clone());
        svc.insert("image".into(), Value::String(b.image.clone()));
        services.insert(Value::String(b.service.clone()), Value::Mapping(svc));
    }
    if services.is_empty() {
        return Ok(None);
    }
    let mut doc = serde_norway::Mapping::new();
    doc.insert("name".into(), Value::String(project.to_string()));
    doc.insert("services".into(), Value::Mapping(services));
    serde_norway::to_string(&Value::Mapping(doc))
        .map(Some)
        .with_context(|| format!("cannot write the build file `{file}`"))
}

/// The commit of the project's repository that loops with `workspace = "git"` get: HEAD,
/// with a note when the work tree has changes that are not in it.
pub fn repo_head(
    root: &Path,
    loop_name: &str,
    progress: &dyn crate::report::Report,
) -> Result<String> {
    let head = git(root, &["rev-parse", "--verify", "HEAD"])
        .ok_or_else(|| {
            coded(
                Exit::BadInput,
                format!(
                    "loops.{loop_name}.workspace = \"git\" needs the project in a git repository with a commit ({} is not); `git init && git add -A && git commit`, or give the loop a host path",
                    root.display()
                ),
            )
        })?;
    if git(root, &["status", "--porcelain", "--untracked-files=no"]).is_some() {
        progress.info(&format!(
            "the repository has uncommitted changes: loops with `workspace = \"git\"` get commit {} without them; commit them and deploy again to hand them over",
            &head[..head.len().min(12)]
        ));
    }
    Ok(head)
}

/// `git -C root ARGS`: its output, trimmed; `None` when it fails or prints nothing.
pub fn git(root: &Path, args: &[&str]) -> Option<String> {
    std::process::Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

/// A git bundle of HEAD with the commits the host lacks (all of them when it has none, or
/// one this repository does not know).
pub fn repo_bundle(root: &Path, host_has: Option<&str>) -> Result<Vec<u8>> {
    let dir = tempfile::tempdir().context("cannot create a temp dir")?;
    let file = dir.path().join("repo.bundle");
    let known = host_has.filter(|c| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(root)
            .args(["cat-file", "-e", &format!("{c}^{{commit}}")])
            .status()
            .is_ok_and(|s| s.success())
    });
    let mut cmd = std::process::Command::new("git");
    cmd.arg("-C")
        .arg(root)
        .args(["bundle", "create", "-q"])
        .arg(&file)
        .arg("HEAD");
    if let Some(c) = known {
        cmd.arg(format!("^{c}"));
    }
    let out = cmd
        .output()
        .with_context(|| format!("cannot run git in `{}`", root.display()))?;
    if !out.status.success() {
        anyhow::bail!(
            "`git bundle create` in `{}` failed: {}",
            root.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    std::fs::read(&file).with_context(|| format!("cannot read `{}`", file.display()))
}

/// The objects to send: each file's content (a symlink's target) and its mode on the host.
pub fn read_objects(missing: &[&Entry]) -> Result<Vec<(String, u32, Vec<u8>)>> {
    missing
        .iter()
        .map(|e| {
            let data = match e.kind {
                Kind::Link => std::fs::read_link(&e.local)
                    .map(|t| t.to_string_lossy().into_owned().into_bytes()),
                _ => std::fs::read(&e.local),
            }
            .with_context(|| format!("cannot read `{}`", e.local.display()))?;
            let mode = match e.kind {
                Kind::Exec => 0o755,
                Kind::Secret => 0o600,
                Kind::File | Kind::Link => 0o644,
            };
            Ok((e.object.clone(), mode, data))
        })
        .collect()
}

/// Refuses a tree over `max`, naming the directory that holds most of it.
fn check_size(entries: &[Entry], max: Bytes) -> Result<()> {
    let total: u64 = entries.iter().map(|e| e.size).sum();
    if total <= max.0 {
        return Ok(());
    }
    let mut dirs: BTreeMap<&str, u64> = BTreeMap::new();
    for e in entries {
        let mut p = e.path.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            *dirs.entry(parent).or_default() += e.size;
            p = parent;
        }
    }
    // the deepest directory that holds at least half of it
    let heavy = dirs
        .iter()
        .filter(|(_, size)| **size * 2 >= total)
        .max_by_key(|(d, _)| d.matches('/').count())
        .map(|(d, size)| format!("; `{d}/` alone is {}", Bytes(*size)))
        .unwrap_or_default();
    Err(coded(
        Exit::BadInput,
        format!(
            "the project's files the stack references weigh {} in {} files, over the limit of {}{heavy}; leave out what the build makes or downloads (add it to .gitignore, or .dockerignore outside git), or raise `[files] max_size` in homebase.toml",
            Bytes(total),
            entries.len(),
            max
        ),
    ))
}

/// The services the host builds.
fn builds(compose: &ComposeProject, project: &str, entries: &[Entry]) -> Result<Vec<Build>> {
    let mut out = Vec::new();
    for (name, svc) in &compose.services {
        let Some(b) = svc.raw.get("build") else {
            continue;
        };
        if build_paths(b).0.is_none() {
            continue; // a remote context: Compose fetches it on the host
        }
        out.push(build(compose, project, entries, name, b)?);
    }
    Ok(out)
}

/// The loops whose image the host builds: their `build` as Compose's, the context made
/// relative to the project directory.
fn loop_builds(
    compose: &ComposeProject,
    config: &homebase_stack::config::Config,
    config_dir: &Path,
) -> Result<Vec<(String, Value)>> {
    let mut out = Vec::new();
    for (name, l) in &config.loops {
        let Some(b) = &l.build else { continue };
        let mut v = b.to_compose();
        let ctx = v
            .get("context")
            .and_then(Value::as_str)
            .unwrap_or(".")
            .to_string();
        let base = config_dir
            .strip_prefix(&compose.project_dir)
            .map(|p| p.to_string_lossy().into_owned())
            .map_err(|_| {
                coded(
                    Exit::BadInput,
                    format!(
                        "loops.{name}.build: homebase.toml ({}) is outside the compose project directory {}; keep it there so the build context travels with the project",
                        config_dir.display(),
                        compose.project_dir.display()
                    ),
                )
            })?;
        let rel = inside(
            &compose.project_dir,
            &join(&base, &ctx),
            &format!("loops.{name}.build context"),
        )?;
        if let Value::Mapping(m) = &mut v {
            m.insert(
                "context".into(),
                Value::String(if rel.is_empty() {
                    ".".into()
                } else {
                    format!("./{rel}")
                }),
            );
        }
        out.push((name.clone(), v));
    }
    Ok(out)
}

/// One build, checked (its Dockerfile there and not ignored) and tagged by its inputs.
fn build(
    compose: &ComposeProject,
    project: &str,
    entries: &[Entry],
    name: &str,
    b: &Value,
) -> Result<Build> {
    let ctx = normalize(&build_paths(b).0.unwrap_or_default()).unwrap_or_default();
    let inline = b.get("dockerfile_inline").is_some();
    let dockerfile = b
        .get("dockerfile")
        .and_then(Value::as_str)
        .unwrap_or("Dockerfile");
    if !inline {
        check_dockerfile(compose, entries, name, &ctx, dockerfile)?;
    }
    let mut h = Sha256::new();
    h.update(serde_norway::to_string(b).unwrap_or_default().as_bytes());
    let (_, extra) = build_paths(b);
    let mut roots = vec![ctx.clone()];
    roots.extend(extra.into_iter().filter_map(|(_, p)| normalize(&p)));
    for e in entries
        .iter()
        .filter(|e| roots.iter().any(|r| under(&e.path, r)))
    {
        h.update(e.path.as_bytes());
        h.update([0]);
        h.update(e.object.as_bytes());
        h.update([0]);
    }
    let tag = &hex(&h.finalize())[..16];
    Ok(Build {
        file: "compose.yml",
        service: name.to_string(),
        agent_loop: None,
        def: b.clone(),
        image: format!(
            "homebase/{}-{}:{tag}",
            project.to_ascii_lowercase(),
            name.to_ascii_lowercase()
        ),
    })
}

/// A build's Dockerfile is carried to the host and not excluded by its `.dockerignore`.
fn check_dockerfile(
    compose: &ComposeProject,
    entries: &[Entry],
    name: &str,
    ctx: &str,
    dockerfile: &str,
) -> Result<()> {
    let df = normalize(&join(ctx, dockerfile)).unwrap_or_default();
    let local = compose.project_dir.join(&df);
    if !entries.iter().any(|e| e.path == df) {
        let why = if local.exists() {
            "it exists but is not carried to the host (git ignores it); track it in git"
        } else {
            "create it, or set `build.dockerfile` to the right file"
        };
        return Err(coded(
            Exit::BadInput,
            format!(
                "`{name}`: its Dockerfile `{}` is missing: {why}",
                local.display()
            ),
        ));
    }
    let ctx_dir = compose.project_dir.join(ctx);
    let own = ctx_dir.join(format!("{dockerfile}.dockerignore"));
    let ignore_file = if own.exists() {
        own
    } else {
        ctx_dir.join(".dockerignore")
    };
    let matcher = dockerignore(&ctx_dir, &ignore_file)?;
    let rel = normalize(dockerfile).unwrap_or_default();
    if matcher.matched_path_or_any_parents(&rel, false).is_ignore() {
        return Err(coded(
            Exit::BadInput,
            format!(
                "`{name}`: `{}` excludes its Dockerfile `{rel}`, so the build cannot read it; remove that pattern (or add `!{rel}`)",
                ignore_file.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::refs::{bind_read_only, bind_source};
    use super::*;

    #[test]
    fn paths_fold_and_never_leave() {
        assert_eq!(normalize("./api/../web/x").as_deref(), Some("web/x"));
        assert_eq!(normalize(".").as_deref(), Some(""));
        assert_eq!(normalize("../x"), None);
        assert_eq!(normalize("a/../../x"), None);
        assert_eq!(normalize("/etc"), None);
        assert!(under("api/x", "api"));
        assert!(!under("apix/y", "api"));
        assert!(under("anything", ""));
    }

    #[test]
    fn dockerignore_patterns_are_anchored_and_take_exceptions() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join(".dockerignore"),
            "node_modules\n*.log\n!keep.log\n# comment\n./build\n",
        )
        .expect("write");
        let m = dockerignore(dir.path(), &dir.path().join(".dockerignore")).expect("matcher");
        assert!(
            m.matched_path_or_any_parents("node_modules/a/b.js", false)
                .is_ignore()
        );
        assert!(
            !m.matched_path_or_any_parents("src/node_modules/a.js", false)
                .is_ignore()
        );
        assert!(m.matched_path_or_any_parents("x.log", false).is_ignore());
        assert!(!m.matched_path_or_any_parents("keep.log", false).is_ignore());
        assert!(m.matched_path_or_any_parents("build", true).is_ignore());
        assert!(
            !m.matched_path_or_any_parents("src/main.py", false)
                .is_ignore()
        );
    }

    #[test]
    fn a_manifest_delta_names_what_changed_and_went() {
        let base = "f aa a.txt\nx bb bin/run\nf cc dir with space/c\n";
        let new = "f aa a.txt\nf bb bin/run\nf dd new file\n";
        assert_eq!(
            manifest_delta(base, new),
            "+ f bb bin/run\n+ f dd new file\n- dir with space/c\n"
        );
        assert_eq!(manifest_delta(new, new), "");
    }

    #[test]
    fn bind_sources_are_relative_paths_only() {
        let s = |t: &str| bind_source(&Value::String(t.into()));
        assert_eq!(s(".:/app").as_deref(), Some("."));
        assert_eq!(s("./data:/data:rw").as_deref(), Some("./data"));
        assert_eq!(s("pgdata:/var/lib/postgresql"), None);
        assert_eq!(s("/var/run/docker.sock:/s"), None);
        assert!(bind_read_only(&Value::String(".:/code:ro".into())));
        assert!(bind_read_only(&Value::String(".:/code:ro,z".into())));
        assert!(!bind_read_only(&Value::String("./data:/data".into())));
    }
}
