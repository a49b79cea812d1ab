//! Docker's events as they happen: each recorded, a container's death told from a stop
//! (a crash is alerted and started again at once), and a fresh round asked for.

use super::State;
use super::release_job_running;
use crate::shared::Shared;
use futures_util::StreamExt;
use homebase_engine::Engine;
use homebase_proto::clock::now;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
pub(super) async fn watch_events(
    engine: Engine,
    shared: Arc<Shared>,
    state: Arc<tokio::sync::Mutex<State>>,
    cancel: CancellationToken,
) {
    loop {
        let mut events = Box::pin(engine.events());
        loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => return,
                n = events.next() => n,
            };
            let Some(ev) = next else {
                shared.wake.notify_one();
                break;
            };
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::warn!("docker events: {e:#}");
                    // the engine may be gone: a round now finds out
                    shared.wake.notify_one();
                    break;
                }
            };
            let action = ev.action.clone();
            let kind = action.split(':').next().unwrap_or("").trim().to_string();
            if !matches!(
                kind.as_str(),
                "die"
                    | "oom"
                    | "start"
                    | "restart"
                    | "health_status"
                    | "pause"
                    | "unpause"
                    | "kill"
                    | "stop"
            ) {
                continue;
            }
            let message = match (&kind[..], ev.exit_code) {
                ("die", Some(code)) => format!("container exited with code {code}"),
                _ => action.clone(),
            };
            shared
                .event(&ev.project, &ev.service, &kind, &message)
                .await;
            let t = now();
            let mut st = state.lock().await;
            let track = st.tracks.entry(ev.id.clone()).or_default();
            track.last_action = kind.clone();
            if kind == "stop" {
                track.stopped_by_homebase =
                    track.killed_by_homebase || release_job_running(&shared.home, &ev.project);
            }
            if kind == "kill" {
                track.killed_at = Some(std::time::Instant::now());
                track.killed_by_homebase = release_job_running(&shared.home, &ev.project);
            }
            let after_kill = track
                .killed_at
                .is_some_and(|k| k.elapsed() < Duration::from_secs(15));
            if kind == "die" {
                track.deaths.push_back(t);
                track.died_at = Some(std::time::Instant::now());
            }
            let governed = st
                .governed
                .get(&ev.project)
                .is_some_and(|g| g.iter().any(|(_, id, _)| *id == ev.id));
            drop(st);
            if kind == "die" && !governed {
                // A crash has no `kill` before its `die`: alert and start it at once. After a
                // kill it may be a `docker stop` (or a deploy), whose `stop` event follows the
                // `die` within milliseconds: wait that long, no more.
                let (engine, shared, state, ev) = (
                    engine.clone(),
                    Arc::clone(&shared),
                    Arc::clone(&state),
                    ev.clone(),
                );
                tokio::spawn(on_death(engine, shared, state, ev, after_kill));
            }
            if kind == "oom" {
                shared.notify(&ev.project, &ev.service, "oom", "the container ran out of memory and was killed by the kernel; raise its limit or lower its use").await;
            }
            // A fresh round now, so live clients see the change without waiting.
            shared.wake.notify_one();
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// A container's `die`: a crash (no `kill` before it, or none followed by a `stop` within
/// 300 ms) is alerted and started again at once, when it is still down.
async fn on_death(
    engine: Engine,
    shared: Arc<Shared>,
    state: Arc<tokio::sync::Mutex<State>>,
    ev: homebase_engine::Event,
    after_kill: bool,
) {
    if after_kill {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let last = state
        .lock()
        .await
        .tracks
        .get(&ev.id)
        .map(|t| t.last_action.clone())
        .unwrap_or_default();
    let still_down = engine
        .containers()
        .await
        .map(|cs| {
            cs.iter()
                .any(|c| c.id == ev.id && matches!(c.state.as_str(), "exited" | "dead"))
        })
        .unwrap_or(false);
    if last == "die" && still_down {
        let why = ev
            .exit_code
            .map(|c| format!(" (exit code {c})"))
            .unwrap_or_default();
        shared
            .alert(
                &ev.project,
                &ev.service,
                "down",
                &format!("the container stopped{why}"),
            )
            .await;
        heal_now(&engine, &shared, &state, &ev, &why).await;
    }
}

/// Starts a container that crashed (or was killed) at once, unless a deploy or rollback of
/// its project is at work, the governor holds it, or it is in a crash loop; backoff doubles
/// from one second while it keeps dying.
async fn heal_now(
    engine: &Engine,
    shared: &Arc<Shared>,
    state: &tokio::sync::Mutex<State>,
    ev: &homebase_engine::Event,
    why: &str,
) {
    if release_job_running(&shared.home, &ev.project) {
        return;
    }
    let t = now();
    {
        let mut st = state.lock().await;
        let governed = st
            .governed
            .get(&ev.project)
            .is_some_and(|g| g.iter().any(|(_, id, _)| *id == ev.id));
        let track = st.tracks.entry(ev.id.clone()).or_default();
        if governed || track.gave_up || t < track.next_heal || track.last_action != "die" {
            return;
        }
        track.heal_started(t, 1);
    }
    shared
        .event(
            &ev.project,
            &ev.service,
            "heal_start",
            &format!("it stopped{why} without being asked to; starting it again at once"),
        )
        .await;
    if let Err(e) = engine.start(&ev.id).await {
        shared
            .event(&ev.project, &ev.service, "heal_failed", &format!("{e:#}"))
            .await;
    }
}
