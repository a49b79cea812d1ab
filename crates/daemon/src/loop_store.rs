//! Agent-loop state and iteration records in the daemon's SQLite store. Everything a loop
//! needs to continue after a daemon or host restart lives here, written before it acts:
//! an iteration's row exists (outcome `running`) before its container is created.

use anyhow::Result;
use homebase_proto::IterationRecord;
use rusqlite::{OptionalExtension, params};

use crate::loops::state::{Breaker, RunState};
use crate::store::Store;

/// A loop's persistent state (one row per project and loop).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoopRow {
    pub project: String,
    pub name: String,
    pub state: RunState,
    pub reason: String,
    pub run: i64,
    /// Iterations of the current run.
    pub iterations: i64,
    pub breaker: Breaker,
    /// Iterations in a row without file changes.
    pub no_progress: i64,
    /// Identical errors in a row, and the last error's signature.
    pub same_error: i64,
    pub last_error: Option<String>,
    /// `usage_limit` while the agent's usage limit holds the loop back.
    pub wait_kind: Option<String>,
    pub wait_until: Option<i64>,
    /// The workspace's fingerprint after the last iteration (for `run = "on_change"`).
    pub fingerprint: Option<String>,
    pub last_started: Option<i64>,
    pub last_ended: Option<i64>,
}

/// What an iteration ended with, to record.
#[derive(Debug, Clone, Default)]
pub struct Finished {
    pub ended: i64,
    pub outcome: String,
    pub exit_code: Option<i64>,
    pub duration_ms: i64,
    pub files_changed: Option<i64>,
    pub diffstat: Option<String>,
    pub tail: String,
    pub note: String,
    /// The workspace's commit after the iteration (`workspace = "git"`).
    pub commit: Option<String>,
}

const ITERATION_COLUMNS: &str = "id, run, n, started, ended, outcome, exit_code, duration_ms, files_changed, diffstat, tail, note, container, commit_id";

fn iteration(r: &rusqlite::Row<'_>) -> rusqlite::Result<(IterationRecord, String)> {
    Ok((
        IterationRecord {
            id: r.get(0)?,
            run: r.get(1)?,
            n: r.get(2)?,
            started: r.get(3)?,
            ended: r.get(4)?,
            outcome: r.get(5)?,
            exit_code: r.get(6)?,
            duration_ms: r.get(7)?,
            files_changed: r.get(8)?,
            diffstat: r.get(9)?,
            tail: r.get(10)?,
            note: r.get(11)?,
            commit: r.get(13)?,
        },
        r.get(12)?,
    ))
}

impl Store {
    pub fn loop_row(&self, project: &str, name: &str) -> Result<Option<LoopRow>> {
        let conn = self.conn();
        let row = conn
            .query_row(
                "SELECT state, reason, run, iterations, breaker, breaker_until, no_progress, same_error,
                        last_error, wait_kind, wait_until, fingerprint, last_started, last_ended
                 FROM loops WHERE project = ?1 AND name = ?2",
                params![project, name],
                |r| {
                    Ok(LoopRow {
                        project: project.to_string(),
                        name: name.to_string(),
                        state: RunState::parse(&r.get::<_, String>(0)?),
                        reason: r.get(1)?,
                        run: r.get(2)?,
                        iterations: r.get(3)?,
                        breaker: Breaker::parse(&r.get::<_, String>(4)?, r.get(5)?),
                        no_progress: r.get(6)?,
                        same_error: r.get(7)?,
                        last_error: r.get(8)?,
                        wait_kind: r.get(9)?,
                        wait_until: r.get(10)?,
                        fingerprint: r.get(11)?,
                        last_started: r.get(12)?,
                        last_ended: r.get(13)?,
                    })
                },
            )
            .optional()?;
        Ok(row)
    }

    pub fn save_loop(&self, l: &LoopRow) -> Result<()> {
        self.conn().execute(
            "INSERT INTO loops (project, name, state, reason, run, iterations, breaker, breaker_until,
                 no_progress, same_error, last_error, wait_kind, wait_until, fingerprint, last_started, last_ended)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
             ON CONFLICT (project, name) DO UPDATE SET state = excluded.state, reason = excluded.reason,
                 run = excluded.run, iterations = excluded.iterations, breaker = excluded.breaker,
                 breaker_until = excluded.breaker_until, no_progress = excluded.no_progress,
                 same_error = excluded.same_error, last_error = excluded.last_error,
                 wait_kind = excluded.wait_kind, wait_until = excluded.wait_until,
                 fingerprint = excluded.fingerprint, last_started = excluded.last_started,
                 last_ended = excluded.last_ended",
            params![
                l.project,
                l.name,
                l.state.as_str(),
                l.reason,
                l.run,
                l.iterations,
                l.breaker.as_str(),
                l.breaker.until(),
                l.no_progress,
                l.same_error,
                l.last_error,
                l.wait_kind,
                l.wait_until,
                l.fingerprint,
                l.last_started,
                l.last_ended
            ],
        )?;
        Ok(())
    }

    /// Records an iteration as running (before its container exists); returns its id.
    pub fn begin_iteration(
        &self,
        project: &str,
        name: &str,
        run: i64,
        n: i64,
        started: i64,
    ) -> Result<i64> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO iterations (project, name, run, n, started, outcome) VALUES (?1, ?2, ?3, ?4, ?5, 'running')",
            params![project, name, run, n, started],
        )?;
        Ok(conn.last_insert_rowid())
    }

    pub fn set_iteration_container(&self, id: i64, container: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE iterations SET container = ?2 WHERE id = ?1",
            params![id, container],
        )?;
        Ok(())
    }

    pub fn finish_iteration(&self, id: i64, f: &Finished) -> Result<()> {
        self.conn().execute(
            "UPDATE iterations SET ended = ?2, outcome = ?3, exit_code = ?4, duration_ms = ?5,
                 files_changed = ?6, diffstat = ?7, tail = ?8, note = ?9, commit_id = ?10 WHERE id = ?1",
            params![
                id,
                f.ended,
                f.outcome,
                f.exit_code,
                f.duration_ms,
                f.files_changed,
                f.diffstat,
                f.tail,
                f.note,
                f.commit
            ],
        )?;
        Ok(())
    }

    /// Iterations still recorded as running, with their container ids (after a restart).
    pub fn running_iterations(
        &self,
        project: &str,
        name: &str,
    ) -> Result<Vec<(IterationRecord, String)>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(&format!(
            "SELECT {ITERATION_COLUMNS} FROM iterations WHERE project = ?1 AND name = ?2 AND outcome = 'running' ORDER BY id"
        ))?;
        let rows = st.query_map(params![project, name], iteration)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest iterations first.
    pub fn iterations(
        &self,
        project: &str,
        name: &str,
        limit: i64,
    ) -> Result<Vec<IterationRecord>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(&format!(
            "SELECT {ITERATION_COLUMNS} FROM iterations WHERE project = ?1 AND name = ?2 ORDER BY id DESC LIMIT ?3"
        ))?;
        let rows = st.query_map(params![project, name, limit], iteration)?;
        Ok(rows.map(|r| r.map(|(i, _)| i)).collect::<Result<_, _>>()?)
    }

    /// Start times of the loop's iterations since `since`, oldest first (for the rate limit).
    pub fn started_since(&self, project: &str, name: &str, since: i64) -> Result<Vec<i64>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(
            "SELECT started FROM iterations WHERE project = ?1 AND name = ?2 AND started >= ?3
             AND outcome NOT IN ('failed_to_start') ORDER BY started",
        )?;
        let rows = st.query_map(params![project, name, since], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Retention;

    #[test]
    fn loop_state_and_iterations_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        let store = Store::open(&path, Retention::default()).unwrap();
        assert_eq!(store.loop_row("p", "ralph").unwrap(), None);
        let mut row = LoopRow {
            project: "p".into(),
            name: "ralph".into(),
            state: RunState::Active,
            run: 1,
            ..Default::default()
        };
        store.save_loop(&row).unwrap();
        let a = store.begin_iteration("p", "ralph", 1, 1, 100).unwrap();
        store.set_iteration_container(a, "c1").unwrap();
        store
            .finish_iteration(
                a,
                &Finished {
                    ended: 110,
                    outcome: "ok".into(),
                    exit_code: Some(0),
                    duration_ms: 10_000,
                    files_changed: Some(2),
                    ..Default::default()
                },
            )
            .unwrap();
        let b = store.begin_iteration("p", "ralph", 1, 2, 120).unwrap();
        store.set_iteration_container(b, "c2").unwrap();
        row.iterations = 2;
        store.save_loop(&row).unwrap();
        drop(store);
        let store = Store::open(&path, Retention::default()).unwrap();
        assert_eq!(store.loop_row("p", "ralph").unwrap(), Some(row));
        let running = store.running_iterations("p", "ralph").unwrap();
        assert_eq!(running.len(), 1);
        assert_eq!((running[0].0.n, running[0].1.as_str()), (2, "c2"));
        let all = store.iterations("p", "ralph", 10).unwrap();
        assert_eq!(all.iter().map(|i| i.n).collect::<Vec<_>>(), [2, 1]);
        assert_eq!(all[1].files_changed, Some(2));
        assert_eq!(store.started_since("p", "ralph", 110).unwrap(), [120]);
    }
}
