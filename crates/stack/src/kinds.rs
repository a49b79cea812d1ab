//! What an image is, judged from its name: decides default priorities, suggested limits and
//! which memory settings can be derived from a limit.

use crate::config::Priority;
use crate::units::Bytes;

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
