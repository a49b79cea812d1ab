//! History in embedded SQLite (WAL): raw samples for an hour, 1-minute averages for 7 days,
//! 15-minute averages for 90 days, and the event log. Survives daemon restarts; disk use is
//! bounded by the retention windows.

use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result};
use rusqlite::{Connection, params};
use serde::Serialize;

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

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Point {
    pub ts: i64,
    pub memory_bytes: f64,
    pub cpu_percent: f64,
}

pub use homebase_proto::EventRow;

impl Store {
    pub fn open(path: &Path, retention: Retention) -> Result<Store> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create `{}`", dir.display()))?;
        }
        let conn = Connection::open(path)
            .with_context(|| format!("cannot open the history database `{}`", path.display()))?;
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
             CREATE INDEX IF NOT EXISTS iterations_idx ON iterations (project, name, id);",
        )
        .with_context(|| format!("cannot set up `{}`", path.display()))?;
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
