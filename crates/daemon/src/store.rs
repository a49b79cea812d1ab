//! History in embedded SQLite (WAL): raw samples for an hour, 1-minute averages for 7 days,
//! 15-minute averages for 90 days, and the event log. Survives daemon restarts; disk use is
//! bounded by the retention windows.

use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result};
use rusqlite::{Connection, params};

/// Iteration records kept per loop (the oldest go first).
const MAX_ITERATIONS_PER_LOOP: i64 = 10_000;

/// How long each resolution is kept, in seconds.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub raw: i64,
    pub minute: i64,
    pub quarter: i64,
    pub events: i64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            raw: 3600,
            minute: 7 * 86400,
            quarter: 90 * 86400,
            events: 90 * 86400,
        }
    }
}

pub struct Store {
    conn: Mutex<Connection>,
    retention: Retention,
}

pub use homebase_proto::Point;

pub use homebase_proto::EventRow;

impl Store {
    pub fn open(path: &Path, retention: Retention) -> Result<Store> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create `{}`", dir.display()))?;
        }
        let conn = Connection::open(path)
            .with_context(|| format!("cannot open the history database `{}`", path.display()))?;
        // history names services and carries events: the owner's only, WAL files included
        // (created with the database's mode)
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("cannot make `{}` private", path.display()))?;
        }
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=NORMAL;
             PRAGMA cache_size=-256;
             CREATE TABLE IF NOT EXISTS samples (res INTEGER NOT NULL, ts INTEGER NOT NULL, project TEXT NOT NULL,
                 service TEXT NOT NULL, memory REAL NOT NULL, cpu REAL NOT NULL);
             CREATE INDEX IF NOT EXISTS samples_idx ON samples (project, service, res, ts);
             CREATE TABLE IF NOT EXISTS events (ts INTEGER NOT NULL, project TEXT NOT NULL, service TEXT NOT NULL,
                 kind TEXT NOT NULL, message TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS events_idx ON events (ts);
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS governed (project TEXT NOT NULL, seq INTEGER NOT NULL, service TEXT NOT NULL,
                 container TEXT NOT NULL, how TEXT NOT NULL, PRIMARY KEY (project, seq));
             CREATE TABLE IF NOT EXISTS loops (project TEXT NOT NULL, name TEXT NOT NULL, state TEXT NOT NULL,
                 reason TEXT NOT NULL, run INTEGER NOT NULL, iterations INTEGER NOT NULL, breaker TEXT NOT NULL,
                 breaker_until INTEGER, no_progress INTEGER NOT NULL, same_error INTEGER NOT NULL,
                 last_error TEXT, wait_kind TEXT, wait_until INTEGER, fingerprint TEXT,
                 last_started INTEGER, last_ended INTEGER, PRIMARY KEY (project, name));
             CREATE TABLE IF NOT EXISTS iterations (id INTEGER PRIMARY KEY AUTOINCREMENT, project TEXT NOT NULL,
                 name TEXT NOT NULL, run INTEGER NOT NULL, n INTEGER NOT NULL, started INTEGER NOT NULL,
                 ended INTEGER, outcome TEXT NOT NULL, exit_code INTEGER, duration_ms INTEGER,
                 files_changed INTEGER, diffstat TEXT, tail TEXT NOT NULL DEFAULT '', note TEXT NOT NULL DEFAULT '',
                 container TEXT NOT NULL DEFAULT '');
             CREATE INDEX IF NOT EXISTS iterations_idx ON iterations (project, name, id);
             CREATE TABLE IF NOT EXISTS spend (project TEXT NOT NULL, name TEXT NOT NULL, ts INTEGER NOT NULL,
                 cost REAL, tokens INTEGER NOT NULL);
             CREATE INDEX IF NOT EXISTS spend_idx ON spend (project, ts);",
        )
        .with_context(|| format!("cannot set up `{}`", path.display()))?;
        // added later: the commit an iteration left (loops with `workspace = "git"`), the
        // agent's result (loops that read it)
        for (column, kind) in [("commit_id", "TEXT"), ("result", "TEXT")] {
            let has: bool = conn
                .prepare("SELECT 1 FROM pragma_table_info('iterations') WHERE name = ?1")
                .and_then(|mut q| q.exists([column]))
                .with_context(|| format!("cannot read `{}`", path.display()))?;
            if !has {
                conn.execute_batch(&format!(
                    "ALTER TABLE iterations ADD COLUMN {column} {kind}"
                ))
                .with_context(|| format!("cannot update `{}`", path.display()))?;
            }
        }
        Ok(Store {
            conn: Mutex::new(conn),
            retention,
        })
    }

    pub(crate) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves a usable connection; take it back.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Raw samples (resolution 0) of one collection round.
    pub fn add_samples(&self, ts: i64, rows: &[(String, String, u64, f64)]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut st = tx.prepare_cached("INSERT INTO samples (res, ts, project, service, memory, cpu) VALUES (0, ?1, ?2, ?3, ?4, ?5)")?;
            for (project, service, mem, cpu) in rows {
                st.execute(params![ts, project, service, *mem as f64, cpu])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// What the memory governor holds paused or stopped in a project, in order: kept here
    /// so that a restarted daemon resumes them (instead of leaving them paused for good).
    pub fn save_governed(&self, project: &str, held: &[(String, String, &str)]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM governed WHERE project = ?1", params![project])?;
        for (i, (service, container, how)) in held.iter().enumerate() {
            tx.execute(
                "INSERT INTO governed (project, seq, service, container, how) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![project, i as i64, service, container, how],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Every project's held services, in order.
    pub fn governed(&self) -> Result<Vec<(String, String, String, String)>> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT project, service, container, how FROM governed ORDER BY project, seq",
        )?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn add_event(
        &self,
        ts: i64,
        project: &str,
        service: &str,
        kind: &str,
        message: &str,
    ) -> Result<()> {
        self.conn().execute(
            "INSERT INTO events (ts, project, service, kind, message) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![ts, project, service, kind, message],
        )?;
        Ok(())
    }

    /// Rolls raw samples into 1-minute and 15-minute averages and drops what is past retention.
    pub fn compact(&self, now: i64) -> Result<()> {
        let conn = self.conn();
        for (from, to, bucket) in [(0, 60, 60), (60, 900, 900)] {
            let done: i64 = conn
                .query_row(
                    "SELECT value FROM meta WHERE key = ?1",
                    [format!("rolled_{to}")],
                    |r| r.get(0),
                )
                .unwrap_or(0);
            let upto = now / bucket * bucket; // only whole buckets
            if upto <= done {
                continue;
            }
            conn.execute(
                "INSERT INTO samples (res, ts, project, service, memory, cpu)
                 SELECT ?1, (ts / ?2) * ?2, project, service, AVG(memory), AVG(cpu) FROM samples
                 WHERE res = ?3 AND ts >= ?4 AND ts < ?5 GROUP BY (ts / ?2), project, service",
                params![to, bucket, from, done, upto],
            )?;
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![format!("rolled_{to}"), upto],
            )?;
        }
        let r = self.retention;
        conn.execute(
            "DELETE FROM samples WHERE res = 0 AND ts < ?1",
            [now - r.raw],
        )?;
        conn.execute(
            "DELETE FROM samples WHERE res = 60 AND ts < ?1",
            [now - r.minute],
        )?;
        conn.execute(
            "DELETE FROM samples WHERE res = 900 AND ts < ?1",
            [now - r.quarter],
        )?;
        conn.execute("DELETE FROM events WHERE ts < ?1", [now - r.events])?;
        // iterations: as long as events, and at most the newest 10,000 of each loop; a
        // running one (its row is how a restarted daemon adopts it) always stays
        // what loops spent: two months, whatever the iterations' retention (a month's cap
        // counts every iteration of the month)
        conn.execute("DELETE FROM spend WHERE ts < ?1", [now - 62 * 86400])?;
        conn.execute(
            "DELETE FROM iterations WHERE outcome != 'running' AND started < ?1",
            [now - r.events],
        )?;
        conn.execute(
            "DELETE FROM iterations WHERE outcome != 'running' AND id IN (
                 SELECT id FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY project, name ORDER BY id DESC) AS k
                                 FROM iterations) WHERE k > ?1)",
            [MAX_ITERATIONS_PER_LOOP],
        )?;
        Ok(())
    }

    /// A service's history between `from` and `to` at a resolution (0, 60 or 900 seconds).
    pub fn history(
        &self,
        project: &str,
        service: &str,
        from: i64,
        to: i64,
        res: i64,
    ) -> Result<Vec<Point>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(
            "SELECT ts, memory, cpu FROM samples WHERE project = ?1 AND service = ?2 AND res = ?3 AND ts >= ?4 AND ts <= ?5 ORDER BY ts",
        )?;
        let rows = st.query_map(params![project, service, res, from, to], |r| {
            Ok(Point {
                ts: r.get(0)?,
                memory_bytes: r.get(1)?,
                cpu_percent: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn events(&self, since: i64, limit: i64) -> Result<Vec<EventRow>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(
            "SELECT ts, project, service, kind, message FROM events WHERE ts >= ?1 ORDER BY ts DESC, rowid DESC LIMIT ?2",
        )?;
        let rows = st.query_map(params![since, limit], |r| {
            Ok(EventRow {
                ts: r.get(0)?,
                project: r.get(1)?,
                service: r.get(2)?,
                kind: r.get(3)?,
                message: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_and_surplus_iterations_are_pruned_a_running_one_never() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("h.db"), Retention::default()).unwrap();
        let now = 100 * 86400;
        {
            let conn = store.conn();
            let add = |started: i64, outcome: &str| {
                conn.execute(
                    "INSERT INTO iterations (project, name, run, n, started, outcome) VALUES ('p', 'l', 1, 1, ?1, ?2)",
                    params![started, outcome],
                )
                .unwrap();
            };
            add(1, "ok"); // older than 90 days
            add(2, "running"); // old, but running
            for i in 0..(MAX_ITERATIONS_PER_LOOP + 5) {
                add(now - 1000 + i % 100, "ok");
            }
        }
        store.compact(now).unwrap();
        let conn = store.conn();
        let count: i64 = conn
            .query_row("SELECT count(*) FROM iterations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, MAX_ITERATIONS_PER_LOOP + 1);
        let running: i64 = conn
            .query_row(
                "SELECT count(*) FROM iterations WHERE outcome = 'running'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(running, 1);
    }

    #[test]
    fn what_the_governor_holds_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        {
            let store = Store::open(&path, Default::default()).unwrap();
            store
                .save_governed(
                    "p",
                    &[
                        ("worker".into(), "c1".into(), "stopped"),
                        ("api".into(), "c2".into(), "paused"),
                    ],
                )
                .unwrap();
        }
        let store = Store::open(&path, Default::default()).unwrap();
        let held = store.governed().unwrap();
        assert_eq!(held.len(), 2);
        assert_eq!(
            held[1],
            ("p".into(), "api".into(), "c2".into(), "paused".into())
        );
        store.save_governed("p", &[]).unwrap();
        assert!(store.governed().unwrap().is_empty());
    }

    #[test]
    fn the_history_is_the_owners_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        let _store = Store::open(&path, Default::default()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn rolls_up_and_prunes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            &dir.path().join("h.db"),
            Retention {
                raw: 120,
                ..Default::default()
            },
        )
        .unwrap();
        for t in 0..180 {
            store
                .add_samples(t, &[("p".into(), "db".into(), (t as u64) * 10, 1.0)])
                .unwrap();
        }
        store.compact(180).unwrap();
        let minute = store.history("p", "db", 0, 1000, 60).unwrap();
        assert_eq!(minute.len(), 3);
        assert_eq!(minute[0].memory_bytes, 295.0); // average of 0..59 × 10
        let raw = store.history("p", "db", 0, 1000, 0).unwrap();
        assert_eq!(raw.first().unwrap().ts, 60); // older raw samples pruned
        // compacting again adds nothing
        store.compact(180).unwrap();
        assert_eq!(store.history("p", "db", 0, 1000, 60).unwrap().len(), 3);
        // survives reopening
        drop(store);
        let again = Store::open(&dir.path().join("h.db"), Retention::default()).unwrap();
        assert_eq!(again.history("p", "db", 0, 1000, 60).unwrap().len(), 3);
    }
}
