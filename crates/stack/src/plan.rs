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
