//! Agent-loop state and iteration records in the daemon's SQLite store. Everything a loop
//! needs to continue after a daemon or host restart lives here, written before it acts:
//! an iteration's row exists (outcome `running`) before its container is created.

use anyhow::Result;
use homebase_proto::{AgentResult, IterationRecord};
use rusqlite::{OptionalExtension, params};

use super::state::{Breaker, RunState};
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
    /// The agent's result, when it printed a valid one: also entered in the spend ledger.
    pub result: Option<AgentResult>,
}

/// What a project's loops (or one of them) spent since an instant, as their agents reported.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spent {
    pub cost: f64,
    pub tokens: u64,
    /// Iterations that reported a result.
    pub results: u64,
}

const ITERATION_COLUMNS: &str = "id, run, n, started, ended, outcome, exit_code, duration_ms, files_changed, diffstat, tail, note, container, commit_id, result";

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
            // written by this daemon from a checked result; unreadable is none
            result: r
                .get::<_, Option<String>>(14)?
                .and_then(|j| serde_json::from_str(&j).ok()),
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

    /// Records an iteration's end, and what its agent reported in the spend ledger (one
    /// transaction: a cap never sees one without the other).
    pub fn finish_iteration(&self, id: i64, f: &Finished) -> Result<()> {
        let result = f.result.as_ref().map(serde_json::to_string).transpose()?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE iterations SET ended = ?2, outcome = ?3, exit_code = ?4, duration_ms = ?5,
                 files_changed = ?6, diffstat = ?7, tail = ?8, note = ?9, commit_id = ?10, result = ?11
             WHERE id = ?1",
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
                f.commit,
                result
            ],
        )?;
        if let Some(r) = &f.result {
            tx.execute(
                "INSERT INTO spend (project, name, ts, cost, tokens)
                 SELECT project, name, ?2, ?3, ?4 FROM iterations WHERE id = ?1",
                params![
                    id,
                    f.ended,
                    r.cost_usd,
                    i64::try_from(r.tokens()).unwrap_or(i64::MAX)
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// What a project's loops spent since `since` (Unix seconds), or one loop's.
    pub fn spent(&self, project: &str, name: Option<&str>, since: i64) -> Result<Spent> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(
            "SELECT COALESCE(SUM(cost), 0.0), COALESCE(SUM(tokens), 0), COUNT(*) FROM spend
             WHERE project = ?1 AND (?2 IS NULL OR name = ?2) AND ts >= ?3",
        )?;
        let (cost, tokens, results): (f64, i64, i64) = st
            .query_row(params![project, name, since], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
        Ok(Spent {
            cost,
            tokens: u64::try_from(tokens).unwrap_or(0),
            results: u64::try_from(results).unwrap_or(0),
        })
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

    #[test]
    fn the_spend_ledger_sums_by_loop_and_project_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        let store = Store::open(&path, Retention::default()).unwrap();
        let finish = |store: &Store, name: &str, ended: i64, cost: Option<f64>, tokens: u64| {
            let id = store.begin_iteration("p", name, 1, 1, ended - 10).unwrap();
            let result = AgentResult {
                subtype: "success".into(),
                cost_usd: cost,
                input_tokens: tokens,
                ..Default::default()
            };
            store
                .finish_iteration(
                    id,
                    &Finished {
                        ended,
                        outcome: "ok".into(),
                        result: Some(result),
                        ..Default::default()
                    },
                )
                .unwrap();
        };
        finish(&store, "ralph", 100, Some(0.25), 1000);
        finish(&store, "ralph", 200, Some(0.5), 2000);
        finish(&store, "other", 300, None, 500);
        // an iteration without a result costs nothing known
        let id = store.begin_iteration("p", "ralph", 1, 4, 390).unwrap();
        store
            .finish_iteration(
                id,
                &Finished {
                    ended: 400,
                    outcome: "error".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        drop(store);
        let store = Store::open(&path, Retention::default()).unwrap();
        let ralph = store.spent("p", Some("ralph"), 0).unwrap();
        assert_eq!((ralph.cost, ralph.tokens, ralph.results), (0.75, 3000, 2));
        let project = store.spent("p", None, 150).unwrap();
        assert_eq!(
            (project.cost, project.tokens, project.results),
            (0.5, 2500, 2)
        );
        assert_eq!(store.spent("q", None, 0).unwrap(), Spent::default());
        let last = store.iterations("p", "ralph", 2).unwrap();
        assert_eq!(last[0].result, None);
        assert_eq!(last[1].result.as_ref().and_then(|r| r.cost_usd), Some(0.5));
    }
}
