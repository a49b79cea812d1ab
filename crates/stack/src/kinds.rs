//! What an image is, judged from its name: decides default priorities, suggested limits and
//! which memory settings can be derived from a limit.

use crate::config::Priority;
use crate::units::Bytes;

/// How a PostgreSQL image takes its settings, when its family is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgFamily {
    /// The official image and those built on it (`pgvector/pgvector`, `postgis/postgis`,
    /// `timescale/timescaledb`): `postgres -c NAME=VALUE` as the command.
    Official,
    /// Bitnami's: flags in `POSTGRESQL_EXTRA_FLAGS`; its command is its own.
    Bitnami,
    /// Any other (Supabase, Crunchy, CloudNativePG, Spilo, …): a command or variable of
    /// homebase's could break its entrypoint, so nothing is derived.
    Unknown,
}

impl PgFamily {
    /// From the image's repository (see [`crate::model::image_repo`]).
    pub fn of(repo: &str) -> PgFamily {
        if repo.starts_with("bitnami/") || repo.contains("/bitnami/") {
            return if repo.ends_with("/postgresql") || repo.ends_with("/postgresql-repmgr") {
                PgFamily::Bitnami
            } else {
                PgFamily::Unknown
            };
        }
        const KNOWN: &[&str] = &[
            "postgres",
            "pgvector/pgvector",
            "ankane/pgvector",
            "postgis/postgis",
            "timescale/timescaledb",
            "tensorchord/pgvecto-rs",
        ];
        let last = repo.rsplit('/').next().unwrap_or(repo);
        let namespace = repo.rsplit_once('/').map(|(n, _)| n);
        // known repositories, and a private build named like one (`me/postgres`,
        // `hb/pgvector`) from a namespace that is not a known other family
        let other = [
            "supabase",
            "crunchydata",
            "cloudnative-pg",
            "zalando",
            "percona",
        ];
        if KNOWN.contains(&repo)
            || (matches!(last, "postgres" | "pgvector" | "postgis" | "timescaledb")
                && !namespace.is_some_and(|n| other.iter().any(|o| n.contains(o))))
        {
            PgFamily::Official
        } else {
            PgFamily::Unknown
        }
    }
}

/// Whether an image is the official `neo4j` (memory through `NEO4J_server_memory_*`).
pub fn neo4j_official(repo: &str) -> bool {
    repo == "neo4j" || repo == "neo4j/neo4j"
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Postgres,
    Neo4j,
    Database,
    Cache,
    Node,
    Jvm,
    Python,
    Other,
}

impl Kind {
    pub fn of(image_repo: Option<&str>) -> Kind {
        let Some(repo) = image_repo else {
            return Kind::Other;
        };
        let last = repo.rsplit('/').next().unwrap_or(repo);
        let has = |names: &[&str]| {
            names
                .iter()
                .any(|n| last == *n || last.starts_with(&format!("{n}-")))
        };
        if has(&[
            "postgres",
            "pgvector",
            "postgis",
            "timescaledb",
            "timescaledb-ha",
            "pgvecto-rs",
            "supabase-postgres",
        ]) || repo.contains("postgres")
            || repo.contains("pgvector")
        {
            Kind::Postgres
        } else if has(&["neo4j"]) {
            Kind::Neo4j
        } else if has(&[
            "mysql",
            "mariadb",
            "mongo",
            "clickhouse-server",
            "clickhouse",
            "qdrant",
            "milvus",
            "weaviate",
            "cassandra",
            "etcd",
            "elasticsearch",
            "opensearch",
            "meilisearch",
            "chroma",
            "minio",
        ]) {
            Kind::Database
        } else if has(&["redis", "valkey", "memcached", "dragonfly", "keydb"]) {
            Kind::Cache
        } else if has(&["node"]) {
            Kind::Node
        } else if has(&[
            "eclipse-temurin",
            "openjdk",
            "amazoncorretto",
            "ibm-semeru-runtimes",
            "ibmjava",
            "sapmachine",
            "maven",
            "gradle",
        ]) {
            Kind::Jvm
        } else if has(&["python", "pypy"]) {
            Kind::Python
        } else {
            Kind::Other
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Postgres => "postgres",
            Kind::Neo4j => "neo4j",
            Kind::Database => "database",
            Kind::Cache => "cache",
            Kind::Node => "node",
            Kind::Jvm => "jvm",
            Kind::Python => "python",
            Kind::Other => "other",
        }
    }

    pub fn default_priority(self) -> Priority {
        match self {
            Kind::Postgres | Kind::Neo4j | Kind::Database => Priority::Critical,
            _ => Priority::Normal,
        }
    }

    /// A starting limit for a service that has none, by what it is.
    pub fn suggested_limit(self) -> Bytes {
        match self {
            Kind::Postgres | Kind::Neo4j | Kind::Database => Bytes::gib(2.0),
            Kind::Cache => Bytes::mib(256),
            Kind::Jvm => Bytes::gib(1.0),
            Kind::Node | Kind::Python | Kind::Other => Bytes::mib(512),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_families() {
        for (repo, family) in [
            ("postgres", PgFamily::Official),
            ("pgvector/pgvector", PgFamily::Official),
            ("postgis/postgis", PgFamily::Official),
            ("timescale/timescaledb", PgFamily::Official),
            ("hb/pgvector", PgFamily::Official),
            ("bitnami/postgresql", PgFamily::Bitnami),
            ("bitnamicharts/x/bitnami/postgresql", PgFamily::Bitnami),
            ("supabase/postgres", PgFamily::Unknown),
            ("crunchydata/crunchy-postgres", PgFamily::Unknown),
            ("cloudnative-pg/postgresql", PgFamily::Unknown),
            ("bitnami/pgbouncer", PgFamily::Unknown),
        ] {
            assert_eq!(PgFamily::of(repo), family, "{repo}");
        }
    }

    #[test]
    fn kinds_from_image_names() {
        assert_eq!(Kind::of(Some("pgvector/pgvector")), Kind::Postgres);
        assert_eq!(Kind::of(Some("postgres")), Kind::Postgres);
        assert_eq!(Kind::of(Some("tensorchord/pgvecto-rs")), Kind::Postgres);
        assert_eq!(Kind::of(Some("neo4j")), Kind::Neo4j);
        assert_eq!(Kind::of(Some("redis")), Kind::Cache);
        assert_eq!(Kind::of(Some("node")), Kind::Node);
        assert_eq!(Kind::of(Some("eclipse-temurin")), Kind::Jvm);
        assert_eq!(Kind::of(Some("n8nio/n8n")), Kind::Other);
        assert_eq!(Kind::of(None), Kind::Other);
    }
}
