//! Typed views of a Compose service: the fields homebase plans, renders and deploys with.

use std::path::Path;

use indexmap::IndexMap;
use serde_norway::{Mapping, Value};

use crate::error::StackError;
use crate::units::Bytes;

/// One service of a Compose project.
#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub image: Option<String>,
    pub has_build: bool,
    /// Memory limit from the compose file, and which key set it.
    pub limit: Option<Bytes>,
    pub limit_key: Option<&'static str>,
    pub reservation: Option<Bytes>,
    pub reservation_key: Option<&'static str>,
    pub healthcheck: Option<Healthcheck>,
    pub ports: Vec<Port>,
    /// Dependency name → condition (`service_started`, `service_healthy`, ...).
    pub depends_on: IndexMap<String, String>,
    /// Dependencies marked `required: false` (Compose starts without them).
    pub optional_deps: Vec<String>,
    /// `None` values are pass-through variables the environment did not set.
    pub environment: IndexMap<String, Option<String>>,
    pub profiles: Vec<String>,
    /// `env_file` entries: path (relative to the project directory) and whether it must exist.
    pub env_files: Vec<(String, bool)>,
    /// Named volumes mounted by the service: (volume, path in the container).
    pub named_volumes: Vec<(String, String)>,
    /// What could not be understood but is left for Compose to judge.
    pub warnings: Vec<String>,
    /// The full definition after merging, interpolation and normalization.
    pub raw: Mapping,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    pub disabled: bool,
    pub test: Vec<String>,
}

/// A published or exposed port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub host_ip: Option<String>,
    /// Host port or range; `None` means Docker picks one.
    pub published: Option<String>,
    pub target: String,
    pub protocol: String,
}

impl Port {
    /// The single published port number, when there is one.
    pub fn published_port(&self) -> Option<u16> {
        self.published.as_deref().and_then(|p| p.parse().ok())
    }

    pub fn target_port(&self) -> Option<u16> {
        self.target.parse().ok()
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn get_path<'a>(m: &'a Mapping, path: &[&str]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let v = m.get(*first)?;
    if rest.is_empty() {
        return Some(v);
    }
    match v {
        Value::Mapping(inner) => get_path(inner, rest),
        _ => None,
    }
}

fn memory(
    m: &Mapping,
    path: &[&str],
    file: &Path,
    service: &str,
) -> Result<Option<Bytes>, StackError> {
    let Some(v) = get_path(m, path) else {
        return Ok(None);
    };
    let Some(s) = scalar(v) else { return Ok(None) };
    if s.trim().is_empty() || s == "0" {
        // An empty value (`mem_limit: ${MEM_LIMIT}` with the variable unset) means no limit.
        return Ok(None);
    }
    Bytes::parse(&s).map(Some).map_err(|e| {
        StackError::invalid(
            file,
            format!("services.{service}.{}", path.join(".")),
            e.to_string(),
        )
    })
}

impl Service {
    pub fn from_raw(name: &str, raw: Mapping, file: &Path) -> Result<Service, StackError> {
        let at = |k: &str| format!("services.{name}.{k}");
        let mem_limit = memory(&raw, &["mem_limit"], file, name)?;
        let deploy_limit = memory(
            &raw,
            &["deploy", "resources", "limits", "memory"],
            file,
            name,
        )?;
        let mem_res = memory(&raw, &["mem_reservation"], file, name)?;
        let deploy_res = memory(
            &raw,
            &["deploy", "resources", "reservations", "memory"],
            file,
            name,
        )?;
        let (limit, limit_key) = pick(
            mem_limit,
            deploy_limit,
            "mem_limit",
            "deploy.resources.limits.memory",
        )
        .map_err(|m| StackError::invalid(file, at("mem_limit"), m))?;
        let (reservation, reservation_key) = pick(
            mem_res,
            deploy_res,
            "mem_reservation",
            "deploy.resources.reservations.memory",
        )
        .map_err(|m| StackError::invalid(file, at("mem_reservation"), m))?;

        let healthcheck = healthcheck(&raw);

        let (ports, warnings) = ports(&raw, file, &at)?;

        let (depends_on, optional_deps) = depends_on(&raw, file, &at)?;

        let mut environment = IndexMap::new();
        if let Some(Value::Mapping(m)) = raw.get("environment") {
            for (k, v) in m {
                environment.insert(scalar(k).unwrap_or_default(), scalar(v));
            }
        }
        let profiles = match raw.get("profiles") {
            Some(Value::Sequence(s)) => s.iter().filter_map(scalar).collect(),
            _ => Vec::new(),
        };
        let image = raw.get("image").and_then(scalar).filter(|s| !s.is_empty());
        let named_volumes = named_volumes(&raw);
        let env_files = env_files(&raw);
        Ok(Service {
            name: name.to_string(),
            image,
            has_build: raw.contains_key("build"),
            limit,
            limit_key,
            reservation,
            reservation_key,
            healthcheck,
            ports,
            depends_on,
            optional_deps,
            environment,
            profiles,
            env_files,
            named_volumes,
            warnings,
            raw,
        })
    }

    /// The image reference without registry and tag, lowercased (`pgvector/pgvector`).
    pub fn image_repo(&self) -> Option<String> {
        self.image.as_deref().map(image_repo)
    }

    /// The image tag, if any.
    pub fn image_tag(&self) -> Option<String> {
        let image = self.image.as_deref()?;
        let no_digest = image.split('@').next().unwrap_or(image);
        match no_digest.rfind(':') {
            Some(i) if !no_digest[i..].contains('/') => Some(no_digest[i + 1..].to_string()),
            _ => None,
        }
    }
}

/// `healthcheck:`, as far as homebase reads it: disabled, and its test.
fn healthcheck(raw: &Mapping) -> Option<Healthcheck> {
    match raw.get("healthcheck") {
        Some(Value::Mapping(h)) => Some(Healthcheck {
            disabled: h.get("disable").is_some_and(|v| v.as_bool() == Some(true))
                || matches!(h.get("test"), Some(Value::Sequence(s)) if s.first().and_then(Value::as_str) == Some("NONE")),
            test: match h.get("test") {
                Some(Value::Sequence(s)) => s.iter().filter_map(scalar).collect(),
                Some(v) => scalar(v)
                    .map(|s| vec!["CMD-SHELL".to_string(), s])
                    .unwrap_or_default(),
                None => Vec::new(),
            },
        }),
        _ => None,
    }
}

/// `ports:`, each a [`Port`]; one homebase cannot read is a warning (Compose judges it).
fn ports(
    raw: &Mapping,
    file: &Path,
    at: &dyn Fn(&str) -> String,
) -> Result<(Vec<Port>, Vec<String>), StackError> {
    let mut ports = Vec::new();
    let mut warnings = Vec::new();
    if let Some(v) = raw.get("ports") {
        let Value::Sequence(seq) = v else {
            return Err(StackError::invalid(
                file,
                at("ports"),
                "`ports` must be a list",
            ));
        };
        for p in seq {
            // Kept in the raw definition for Compose to judge (often a variable the
            // user's .env sets); homebase only loses the typed view of it.
            match parse_port(p) {
                // the same port twice is one, as Compose reads it
                Ok(port) if ports.contains(&port) => {}
                Ok(port) => ports.push(port),
                Err(m) => warnings.push(format!("{}: {m}", at("ports"))),
            }
        }
    }
    Ok((ports, warnings))
}

/// `depends_on:` (with what `links`, `volumes_from` and `service:` namespaces imply): each
/// dependency's condition, and the optional ones (`required: false`).
#[allow(clippy::type_complexity)]
fn depends_on(
    raw: &Mapping,
    file: &Path,
    at: &dyn Fn(&str) -> String,
) -> Result<(IndexMap<String, String>, Vec<String>), StackError> {
    let mut depends_on = IndexMap::new();
    let mut optional_deps = Vec::new();
    match raw.get("depends_on") {
        None | Some(Value::Null) => {}
        Some(Value::Mapping(m)) => {
            for (k, v) in m {
                let dep = scalar(k).unwrap_or_default();
                let cond = match v {
                    Value::Mapping(c) => {
                        if c.get("required").and_then(scalar).as_deref() == Some("false") {
                            optional_deps.push(dep.clone());
                        }
                        c.get("condition")
                            .and_then(scalar)
                            .unwrap_or_else(|| "service_started".into())
                    }
                    _ => "service_started".into(),
                };
                depends_on.insert(dep, cond);
            }
        }
        Some(_) => {
            return Err(StackError::invalid(
                file,
                at("depends_on"),
                "expected a list or a mapping of services",
            ));
        }
    }

    // what `links`, `volumes_from` and `service:` namespaces imply, as Compose adds them
    for dep in crate::validate::implied_dependencies(raw) {
        depends_on
            .entry(dep)
            .or_insert_with(|| "service_started".into());
    }
    Ok((depends_on, optional_deps))
}

/// Named volumes the service mounts, with their targets.
fn named_volumes(raw: &Mapping) -> Vec<(String, String)> {
    match raw.get("volumes") {
        Some(Value::Sequence(vols)) => vols
            .iter()
            .filter_map(|v| match v {
                Value::Mapping(m) => {
                    let kind = m
                        .get("type")
                        .and_then(scalar)
                        .unwrap_or_else(|| "volume".into());
                    let source = m.get("source").and_then(scalar)?;
                    (kind == "volume")
                        .then(|| (source, m.get("target").and_then(scalar).unwrap_or_default()))
                }
                other => {
                    let s = scalar(other)?;
                    let mut parts = s.splitn(3, ':');
                    let (source, target) = (parts.next()?, parts.next()?);
                    let named = !source.is_empty() && !source.starts_with(['.', '/', '~', '$']);
                    named.then(|| (source.to_string(), target.to_string()))
                }
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// `env_file:` entries, with whether each is required.
fn env_files(raw: &Mapping) -> Vec<(String, bool)> {
    match raw.get("env_file") {
        Some(Value::Sequence(entries)) => entries
            .iter()
            .filter_map(|e| match e {
                Value::Mapping(m) => Some((
                    m.get("path").and_then(scalar)?,
                    m.get("required").and_then(Value::as_bool).unwrap_or(true),
                )),
                other => scalar(other).map(|p| (p, true)),
            })
            .collect(),
        _ => Vec::new(),
    }
}

type Picked = (Option<Bytes>, Option<&'static str>);

fn pick(
    a: Option<Bytes>,
    b: Option<Bytes>,
    ka: &'static str,
    kb: &'static str,
) -> Result<Picked, String> {
    match (a, b) {
        (Some(x), Some(y)) if x != y => Err(format!(
            "`{ka}` ({x}) and `{kb}` ({y}) disagree; keep one of them"
        )),
        (Some(x), _) => Ok((Some(x), Some(ka))),
        (None, Some(y)) => Ok((Some(y), Some(kb))),
        (None, None) => Ok((None, None)),
    }
}

/// Parses the short (`[ip:][published:]target[/proto]`) and long port syntaxes.
pub fn parse_port(v: &Value) -> Result<Port, String> {
    match v {
        Value::Mapping(m) => {
            let target = m
                .get("target")
                .and_then(scalar)
                .ok_or("a long-syntax port needs `target`")?;
            Ok(Port {
                host_ip: m.get("host_ip").and_then(scalar),
                published: m
                    .get("published")
                    .and_then(scalar)
                    .filter(|s| !s.is_empty()),
                target,
                protocol: m
                    .get("protocol")
                    .and_then(scalar)
                    .unwrap_or_else(|| "tcp".into()),
            })
        }
        other => {
            let s = scalar(other).ok_or("a port must be a string, a number or a mapping")?;
            let (spec, protocol) = match s.rsplit_once('/') {
                Some((a, p)) => (a.to_string(), p.to_string()),
                None => (s.clone(), "tcp".to_string()),
            };
            // IPv6 host addresses are written in brackets: [::1]:8080:80
            let (host_ip, rest) = if let Some(stripped) = spec.strip_prefix('[') {
                let (ip, rest) = stripped
                    .split_once("]:")
                    .ok_or_else(|| format!("invalid port `{s}`"))?;
                (Some(ip.to_string()), rest.to_string())
            } else {
                (None, spec)
            };
            let parts: Vec<&str> = rest.split(':').collect();
            let (host_ip, published, target) = match parts.as_slice() {
                [t] => (host_ip, None, t.to_string()),
                [p, t] => (host_ip, Some(p.to_string()), t.to_string()),
                [ip, p, t] if host_ip.is_none() => {
                    (Some(ip.to_string()), Some(p.to_string()), t.to_string())
                }
                _ => {
                    return Err(format!(
                        "invalid port `{s}`: expected `[host_ip:][published:]target[/protocol]`"
                    ));
                }
            };
            let ok = |x: &str| !x.is_empty() && x.split('-').all(|n| n.parse::<u16>().is_ok());
            if !ok(&target) {
                return Err(format!(
                    "invalid port `{s}`: `{target}` is not a port number or range"
                ));
            }
            let published = published.filter(|p| !p.is_empty());
            if let Some(p) = &published
                && !ok(p)
            {
                return Err(format!(
                    "invalid port `{s}`: `{p}` is not a port number or range"
                ));
            }
            Ok(Port {
                host_ip: host_ip.filter(|h| !h.is_empty()),
                published,
                target,
                protocol,
            })
        }
    }
}

/// An image reference without registry and tag, lowercased (`pgvector/pgvector` for
/// `docker.io/pgvector/pgvector:pg17`, `postgres` for `library/postgres`).
pub fn image_repo(image: &str) -> String {
    let no_digest = image.split('@').next().unwrap_or(image);
    // a tag is a `:` after the last `/`
    let repo = match no_digest.rfind(':') {
        Some(i) if !no_digest[i..].contains('/') => &no_digest[..i],
        _ => no_digest,
    };
    let parts: Vec<&str> = repo.split('/').collect();
    let repo = if parts.len() > 1
        && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost")
    {
        parts[1..].join("/")
    } else {
        repo.to_string()
    };
    repo.trim_start_matches("library/").to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(s: &str) -> Port {
        parse_port(&Value::String(s.into())).unwrap()
    }

    #[test]
    fn short_port_forms() {
        assert_eq!(port("5432").published, None);
        let p = port("127.0.0.1:5432:5432");
        assert_eq!(
            (p.host_ip.as_deref(), p.published_port(), p.target_port()),
            (Some("127.0.0.1"), Some(5432), Some(5432))
        );
        assert_eq!(port("8080:80/udp").protocol, "udp");
        assert_eq!(
            port("8000-8010:8000-8010").published.as_deref(),
            Some("8000-8010")
        );
        assert_eq!(port("[::1]:8080:80").host_ip.as_deref(), Some("::1"));
        assert!(parse_port(&Value::String("80:http".into())).is_err());
    }

    #[test]
    fn long_port_form() {
        let v: Value =
            serde_norway::from_str("{target: 80, published: '8080', host_ip: 127.0.0.1}").unwrap();
        let p = parse_port(&v).unwrap();
        assert_eq!(p.published_port(), Some(8080));
        assert_eq!(p.target_port(), Some(80));
    }

    #[test]
    fn image_names() {
        let svc = |image: &str| {
            let mut m = Mapping::new();
            m.insert("image".into(), image.into());
            Service::from_raw("s", m, Path::new("c.yml")).unwrap()
        };
        assert_eq!(
            svc("pgvector/pgvector:pg17").image_repo().as_deref(),
            Some("pgvector/pgvector")
        );
        assert_eq!(svc("postgres").image_repo().as_deref(), Some("postgres"));
        assert_eq!(
            svc("docker.io/library/postgres:17").image_repo().as_deref(),
            Some("postgres")
        );
        assert_eq!(
            svc("ghcr.io/immich-app/postgres:14@sha256:abc")
                .image_repo()
                .as_deref(),
            Some("immich-app/postgres")
        );
        assert_eq!(
            svc("localhost:5000/app:1").image_tag().as_deref(),
            Some("1")
        );
        assert_eq!(svc("neo4j:5.26").image_tag().as_deref(), Some("5.26"));
    }

    #[test]
    fn conflicting_limits_are_refused() {
        let m: Mapping = serde_norway::from_str(
            "{image: x, mem_limit: 1g, deploy: {resources: {limits: {memory: 2g}}}}",
        )
        .unwrap();
        let e = Service::from_raw("db", m, Path::new("c.yml")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.yml: services.db.mem_limit: `mem_limit` (1 GiB) and `deploy.resources.limits.memory` (2 GiB) disagree; keep one of them"
        );
    }
}
