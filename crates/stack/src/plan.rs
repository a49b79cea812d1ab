//! The memory plan: every service's limit and reservation, where each number came from,
//! and whether the stack fits the host's budget.

use crate::compose::ComposeProject;
use crate::config::{Config, Priority};
use crate::error::did_you_mean;
use crate::kinds::Kind;
use crate::model::Service;
use crate::units::Bytes;

/// Where a number in the plan came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The compose file, with the key that set it.
    Compose(&'static str),
    Config,
    /// homebase's default, with the reason.
    Default(&'static str),
}

impl Source {
    pub fn describe(&self) -> String {
        match self {
            Source::Compose(key) => format!("compose ({key})"),
            Source::Config => "homebase.toml".into(),
            Source::Default(why) => format!("default ({why})"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PlannedService {
    pub name: String,
    pub image: Option<String>,
    pub kind: Kind,
    pub limit: Option<Bytes>,
    pub limit_source: Option<Source>,
    pub reservation: Option<Bytes>,
    pub reservation_source: Option<Source>,
    pub priority: Priority,
    pub priority_source: Source,
}

/// An agent loop: one iteration at a time, each limited to `memory`.
#[derive(Debug, Clone)]
pub struct PlannedLoop {
    pub name: String,
    pub image: String,
    pub memory: Bytes,
    pub priority: Priority,
}

/// Something that makes the plan refuse the stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    NoLimit {
        service: String,
        kind: Kind,
        suggestion: Bytes,
    },
    ReservationAboveLimit {
        service: String,
        reservation: Bytes,
        limit: Bytes,
    },
    OverBudget {
        peak: Bytes,
        budget: Bytes,
    },
    NoImage {
        service: String,
    },
}

impl Problem {
    pub fn explain(&self) -> String {
        match self {
            Problem::NoLimit {
                service,
                kind,
                suggestion,
            } => format!(
                "service `{service}` has no memory limit, so it could take the whole host; add to homebase.toml:\n    [services.{service}]\n    memory = \"{}\"   # a starting point for {}",
                suggestion
                    .to_compose()
                    .to_uppercase()
                    .replace('G', "GiB")
                    .replace('M', "MiB"),
                match kind.as_str() {
                    "other" => "a service of no known kind".to_string(),
                    k => format!("a {k} service"),
                }
            ),
            Problem::ReservationAboveLimit {
                service,
                reservation,
                limit,
            } => format!(
                "service `{service}` reserves {reservation} but is limited to {limit}; a reservation cannot exceed the limit: lower `sustained` or raise `memory`"
            ),
            Problem::OverBudget { peak, budget } => format!(
                "the stack's peak ({peak}, the sum of limits and loop iterations) is over the budget ({budget}) by {}; lower some limits in homebase.toml, move a service to another host, or raise budget.target",
                Bytes(peak.0 - budget.0)
            ),
            Problem::NoImage { service } => format!(
                "service `{service}` has neither `image` nor `build`; Compose cannot create it"
            ),
        }
    }
}

/// Why a plan could not be made: the input itself is wrong (exit 2), not the fit.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    UnknownService(#[from] UnknownService),
    #[error(
        "{what} `{name}`: a memory limit of 0 means \"no limit\" to Docker; set a real limit (for example {suggestion}) in {place}"
    )]
    ZeroLimit {
        what: &'static str,
        name: String,
        place: String,
        suggestion: Bytes,
    },
    #[error(
        "{what} `{name}`: its memory limit ({limit}) is larger than the host's memory ({host}); set a limit the host can hold in {place}"
    )]
    LimitAboveHost {
        what: &'static str,
        name: String,
        limit: Bytes,
        host: Bytes,
        place: String,
    },
}

/// Sums without wrapping: a total that does not fit in 64 bits is "more than any host".
fn total(values: impl IntoIterator<Item = u64>) -> Bytes {
    Bytes(values.into_iter().fold(0u64, u64::saturating_add))
}

/// A service named in homebase.toml that the compose files do not define.
#[derive(Debug, Clone, thiserror::Error)]
#[error("homebase.toml names service `{name}`, which the compose files do not define{}", suggestion.as_ref().map(|s| format!("; did you mean `{s}`?")).unwrap_or_else(|| format!("; the services are: {}", known.join(", "))))]
pub struct UnknownService {
    pub name: String,
    pub suggestion: Option<String>,
    pub known: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub project: String,
    pub services: Vec<PlannedService>,
    /// Services left out by profiles.
    pub inactive: Vec<String>,
    /// Agent loops; an iteration's limit counts towards both sustained and peak.
    pub loops: Vec<PlannedLoop>,
    pub host_memory: Bytes,
    pub target: f64,
    pub budget: Bytes,
    /// Sum of reservations.
    pub sustained: Bytes,
    /// Sum of limits (services without a limit count zero, and are a problem).
    pub peak: Bytes,
    pub problems: Vec<Problem>,
}

impl Plan {
    pub fn new(
        config: &Config,
        compose: &ComposeProject,
        host_memory: Bytes,
    ) -> Result<Plan, PlanError> {
        for name in config.services.keys() {
            if !compose.services.contains_key(name) && !compose.inactive.contains(name) {
                let known: Vec<String> = compose.services.keys().cloned().collect();
                return Err(UnknownService {
                    name: name.clone(),
                    suggestion: did_you_mean(name, known.iter().map(String::as_str))
                        .map(str::to_string),
                    known,
                }
                .into());
            }
        }
        let mut services = Vec::new();
        let mut problems = Vec::new();
        for (name, svc) in &compose.services {
            services.push(plan_service(config, name, svc, host_memory, &mut problems)?);
        }
        let sum = |f: fn(&PlannedService) -> Option<Bytes>| {
            total(services.iter().filter_map(f).map(|b| b.0))
        };
        for (name, l) in &config.loops {
            if host_memory.0 > 0 && l.memory > host_memory {
                return Err(PlanError::LimitAboveHost {
                    what: "loop",
                    name: name.clone(),
                    limit: l.memory,
                    host: host_memory,
                    place: format!("homebase.toml `loops.{name}.memory`"),
                });
            }
        }
        let loops: Vec<PlannedLoop> = config
            .loops
            .iter()
            .map(|(name, l)| PlannedLoop {
                name: name.clone(),
                image: l.image.clone(),
                memory: l.memory,
                priority: l.priority,
            })
            .collect();
        let loops_total = total(loops.iter().map(|l| l.memory.0));
        let peak = total([sum(|s| s.limit).0, loops_total.0]);
        let sustained = total([sum(|s| s.reservation).0, loops_total.0]);
        let budget = config.budget.of(host_memory);
        if peak > budget {
            problems.push(Problem::OverBudget { peak, budget });
        }
        Ok(Plan {
            project: config.project.name.clone(),
            services,
            inactive: compose.inactive.clone(),
            loops,
            host_memory,
            target: config.budget.target,
            budget,
            sustained,
            peak,
            problems,
        })
    }

    pub fn fits(&self) -> bool {
        self.problems.is_empty()
    }

    /// Budget minus peak; negative when over.
    pub fn headroom(&self) -> i128 {
        self.budget.0 as i128 - self.peak.0 as i128
    }

    pub fn service(&self, name: &str) -> Option<&PlannedService> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// One service's limit, reservation and priority, each with where it came from; what is
/// wrong with it but does not stop the plan goes to `problems`.
fn plan_service(
    config: &Config,
    name: &String,
    svc: &Service,
    host_memory: Bytes,
    problems: &mut Vec<Problem>,
) -> Result<PlannedService, PlanError> {
    let over = config.services.get(name).cloned().unwrap_or_default();
    let kind = Kind::of(svc.image_repo().as_deref());
    let (limit, limit_source) = match (over.memory, svc.limit) {
        (Some(m), _) => (Some(m), Some(Source::Config)),
        (None, Some(l)) => (Some(l), svc.limit_key.map(Source::Compose)),
        (None, None) => (None, None),
    };
    let (reservation, reservation_source) = match (over.sustained, svc.reservation, limit) {
        (Some(s), _, _) => (Some(s), Some(Source::Config)),
        (None, Some(r), _) => (Some(r), svc.reservation_key.map(Source::Compose)),
        (None, None, Some(l)) => (Some(l), Some(Source::Default("equals the limit"))),
        (None, None, None) => (None, None),
    };
    let (priority, why) = config.priority_of(name, svc);
    let priority_source = why.map_or(Source::Config, Source::Default);
    let where_set = || match &limit_source {
        Some(Source::Config) => format!("homebase.toml `services.{name}.memory`"),
        Some(Source::Compose(key)) => format!("the compose file (`services.{name}.{key}`)"),
        _ => format!("homebase.toml `services.{name}.memory`"),
    };
    if let Some(l) = limit {
        if l.0 == 0 {
            return Err(PlanError::ZeroLimit {
                what: "service",
                name: name.clone(),
                place: where_set(),
                suggestion: kind.suggested_limit(),
            });
        }
        if host_memory.0 > 0 && l > host_memory {
            return Err(PlanError::LimitAboveHost {
                what: "service",
                name: name.clone(),
                limit: l,
                host: host_memory,
                place: where_set(),
            });
        }
    }
    if limit.is_none() {
        problems.push(Problem::NoLimit {
            service: name.clone(),
            kind,
            suggestion: kind.suggested_limit(),
        });
    }
    if let (Some(r), Some(l)) = (reservation, limit)
        && r > l
    {
        problems.push(Problem::ReservationAboveLimit {
            service: name.clone(),
            reservation: r,
            limit: l,
        });
    }
    if svc.image.is_none() && !svc.has_build {
        problems.push(Problem::NoImage {
            service: name.clone(),
        });
    }
    Ok(PlannedService {
        name: name.clone(),
        image: svc.image.clone(),
        kind,
        limit,
        limit_source,
        reservation,
        reservation_source,
        priority,
        priority_source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LoadOptions;
    use indexmap::IndexMap;
    use std::path::Path;

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    fn compose(text: &str) -> ComposeProject {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("compose.yml");
        std::fs::write(&file, text).unwrap();
        ComposeProject::load(&LoadOptions {
            files: vec![file],
            ..Default::default()
        })
        .unwrap()
    }

    fn config(extra: &str) -> Config {
        Config::parse(
            Path::new("homebase.toml"),
            &format!("[project]\nname = \"p\"\n{extra}"),
            &IndexMap::new(),
        )
        .unwrap()
    }

    fn plan(compose_text: &str, toml: &str, host: u64) -> Result<Plan, PlanError> {
        Plan::new(&config(toml), &compose(compose_text), Bytes(host))
    }

    const STACK: &str = "services:
  db:
    image: pgvector/pgvector:pg17
    mem_limit: 2g
  api:
    image: brain-api:1
    deploy: {resources: {limits: {memory: 1g}, reservations: {memory: 512m}}}
  watcher:
    image: watcher:1
";

    #[test]
    fn limits_reservations_and_priorities_say_where_they_came_from() {
        let p = plan(
            STACK,
            "[services.watcher]\nmemory = \"256MiB\"\nsustained = \"128MiB\"\npriority = \"batch\"\n",
            16 * GIB,
        )
        .unwrap();
        let db = p.service("db").unwrap();
        assert_eq!(db.limit, Some(Bytes(2 * GIB)));
        assert_eq!(db.limit_source, Some(Source::Compose("mem_limit")));
        // no reservation anywhere: it equals the limit
        assert_eq!(db.reservation, Some(Bytes(2 * GIB)));
        assert_eq!(
            db.reservation_source,
            Some(Source::Default("equals the limit"))
        );
        assert_eq!(db.priority, Priority::Critical);
        assert_eq!(db.priority_source, Source::Default("a database"));

        let api = p.service("api").unwrap();
        assert_eq!(
            api.limit_source,
            Some(Source::Compose("deploy.resources.limits.memory"))
        );
        assert_eq!(api.reservation, Some(Bytes(512 * MIB)));
        assert_eq!(api.priority, Priority::Normal);
        assert_eq!(api.priority_source, Source::Default("not a database"));

        let w = p.service("watcher").unwrap();
        assert_eq!(w.limit, Some(Bytes(256 * MIB)));
        assert_eq!(w.limit_source, Some(Source::Config));
        assert_eq!(w.reservation_source, Some(Source::Config));
        assert_eq!(
            (w.priority, &w.priority_source),
            (Priority::Batch, &Source::Config)
        );

        // the sums and the budget
        assert_eq!(p.peak, Bytes(3 * GIB + 256 * MIB));
        assert_eq!(p.sustained, Bytes(2 * GIB + 512 * MIB + 128 * MIB));
        assert_eq!(p.budget, Bytes((16.0 * GIB as f64 * 0.8) as u64));
        assert!(p.fits(), "{:?}", p.problems);
        assert_eq!(p.headroom(), p.budget.0 as i128 - p.peak.0 as i128);
    }

    #[test]
    fn homebase_toml_beats_the_compose_file() {
        let p = plan(
            STACK,
            "[services.db]\nmemory = \"3GiB\"\n[services.watcher]\nmemory = \"64MiB\"\n",
            16 * GIB,
        )
        .unwrap();
        let db = p.service("db").unwrap();
        assert_eq!(
            (db.limit, &db.limit_source),
            (Some(Bytes(3 * GIB)), &Some(Source::Config))
        );
    }

    #[test]
    fn loops_count_in_the_peak_and_the_sustained_use() {
        let p = plan(
            STACK,
            "[services.watcher]\nmemory = \"64MiB\"\n[loops.ralph]\nimage = \"agent:1\"\ncommand = \"run\"\nmemory = \"2GiB\"\n",
            16 * GIB,
        )
        .unwrap();
        assert_eq!(p.loops.len(), 1);
        assert_eq!(p.peak, Bytes(5 * GIB + 64 * MIB));
        assert_eq!(p.sustained, Bytes(2 * GIB + 512 * MIB + 64 * MIB + 2 * GIB));
    }

    #[test]
    fn what_is_wrong_but_plannable_is_a_problem() {
        let p = plan(
            "services:
  db:
    image: postgres:17
  api:
    image: brain-api:1
    mem_limit: 256m
    mem_reservation: 512m
  built:
    mem_limit: 64m
",
            "",
            16 * GIB,
        )
        .unwrap();
        assert!(!p.fits());
        assert!(p.problems.contains(&Problem::NoLimit {
            service: "db".into(),
            kind: Kind::of(Some("postgres")),
            suggestion: Kind::of(Some("postgres")).suggested_limit(),
        }));
        assert!(p.problems.contains(&Problem::ReservationAboveLimit {
            service: "api".into(),
            reservation: Bytes(512 * MIB),
            limit: Bytes(256 * MIB),
        }));
        assert!(p.problems.contains(&Problem::NoImage {
            service: "built".into()
        }));
        let no_limit = p.problems[0].explain();
        assert!(no_limit.contains("[services.db]"), "{no_limit}");
    }

    #[test]
    fn a_stack_over_its_budget_says_by_how_much() {
        let p = plan(
            STACK,
            "[budget]\ntarget = 0.5\n[services.watcher]\nmemory = \"1GiB\"\n",
            6 * GIB,
        )
        .unwrap();
        assert_eq!(
            p.problems,
            [Problem::OverBudget {
                peak: Bytes(4 * GIB),
                budget: Bytes(3 * GIB)
            }]
        );
        assert!(p.headroom() < 0);
    }

    #[test]
    fn errors_name_the_service_and_the_fix() {
        // an unknown service, with the likely one
        let e = plan(STACK, "[services.apii]\nmemory = \"1GiB\"\n", 16 * GIB).unwrap_err();
        assert!(e.to_string().contains("did you mean `api`?"), "{e}");
        let e = plan(STACK, "[services.zzz]\nmemory = \"1GiB\"\n", 16 * GIB).unwrap_err();
        assert!(
            e.to_string().contains("the services are: db, api, watcher"),
            "{e}"
        );
        // a zero limit, where it was set
        let e = plan(STACK, "[services.watcher]\nmemory = \"0\"\n", 16 * GIB).unwrap_err();
        assert!(matches!(e, PlanError::ZeroLimit { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("homebase.toml `services.watcher.memory`"),
            "{e}"
        );
        // (in a compose file, `mem_limit: 0` is no limit, as Compose reads it)
        let p = plan(
            "services:\n  api:\n    image: a:1\n    mem_limit: 0\n",
            "",
            16 * GIB,
        )
        .unwrap();
        assert!(
            matches!(&p.problems[..], [Problem::NoLimit { .. }]),
            "{:?}",
            p.problems
        );
        // a limit above the host, for a service and for a loop
        let e = plan(STACK, "[services.watcher]\nmemory = \"32GiB\"\n", 16 * GIB).unwrap_err();
        assert!(
            matches!(&e, PlanError::LimitAboveHost { what: "service", name, .. } if name == "watcher"),
            "{e}"
        );
        let e = plan(
            STACK,
            "[services.watcher]\nmemory = \"64MiB\"\n[loops.big]\nimage = \"agent:1\"\ncommand = \"run\"\nmemory = \"32GiB\"\n",
            16 * GIB,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("homebase.toml `loops.big.memory`"),
            "{e}"
        );
        // with the host's memory unknown (0), no limit is above it
        assert!(plan(STACK, "[services.watcher]\nmemory = \"32GiB\"\n", 0).is_ok());
    }
}
