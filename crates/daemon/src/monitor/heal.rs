//! Healing what Docker will not: containers that stay unhealthy or down, with backoff,
//! until a crash loop.

use super::State;
use crate::projects::Project;
use crate::shared::Shared;
use homebase_engine::Container;
use homebase_engine::Engine;
use std::sync::Arc;

/// Restarts containers that stay unhealthy or down (with backoff), and gives up on crash loops.
pub(super) async fn heal(
    engine: &Engine,
    shared: &Arc<Shared>,
    st: &mut State,
    p: &Project,
    watched: &[&Container],
    t: i64,
    listed_at: std::time::Instant,
) {
    let d = &p.daemon;
    let window = (d.crash_loop_minutes * 60) as i64;
    // Swarm replaces its own tasks; the daemon only reports them (see `cluster`).
    for c in watched.iter().filter(|c| c.project == p.name && !c.swarm) {
        let governed = st
            .governed
            .get(&p.name)
            .is_some_and(|g| g.iter().any(|(s, _, _)| *s == c.service));
        let track = st.tracks.entry(c.id.clone()).or_default();
        while track.deaths.front().is_some_and(|d| t - d > window) {
            track.deaths.pop_front();
        }
        if track.gave_up {
            continue;
        }
        if track.deaths.len() as u32 >= d.crash_loop_restarts {
            track.gave_up = true;
            let msg = format!(
                "{} restarts within {} minutes: a crash loop; homebase stopped it and will not restart it. Check `homebase logs {}`, fix, and deploy again",
                track.deaths.len(),
                d.crash_loop_minutes,
                c.service
            );
            if let Err(e) = engine.stop(&c.id).await {
                tracing::warn!("{e:#}");
            }
            shared.event(&p.name, &c.service, "gave_up", &msg).await;
            shared.alert(&p.name, &c.service, "crash_loop", &msg).await;
            continue;
        }
        // Unhealthy for longer than the grace period → restart, with backoff.
        if c.health == "unhealthy" && c.state == "running" {
            let since = *track.unhealthy_since.get_or_insert(t);
            if t - since >= d.unhealthy_grace_secs as i64 && t >= track.next_heal {
                track.heal_started(t, 10);
                track.unhealthy_since = None;
                track.deaths.push_back(t);
                let msg = format!(
                    "unhealthy for {}s; restarting it (next attempt no sooner than {}s)",
                    t - since,
                    track.backoff
                );
                shared
                    .event(&p.name, &c.service, "heal_restart", &msg)
                    .await;
                shared.alert(&p.name, &c.service, "unhealthy", &msg).await;
                if let Err(e) = engine.restart(&c.id).await {
                    shared
                        .event(&p.name, &c.service, "heal_failed", &format!("{e:#}"))
                        .await;
                }
            }
        } else {
            track.unhealthy_since = None;
            if c.health == "healthy" {
                shared
                    .resolve(&p.name, &c.service, "unhealthy", "healthy again")
                    .await;
            }
        }
        // Stopped on purpose (`docker stop` ends with a `stop` event; a crash or a kill does
        // not): left stopped, reported once, never fought over.
        // a stop a deploy or rollback asked for is homebase's, and the release says it runs
        let by_hand = track.last_action == "stop" && !track.stopped_by_homebase;
        if matches!(c.state.as_str(), "exited" | "dead") && by_hand && !governed {
            if track.down_since.is_none() {
                track.down_since = Some(t);
                shared.event(&p.name, &c.service, "stopped", "stopped by hand; homebase leaves it stopped until it is started or deployed again").await;
            }
            continue;
        }
        // Down (exited or dead) and not held down by the governor → start it again.
        if matches!(c.state.as_str(), "exited" | "dead") && !governed {
            let since = *track.down_since.get_or_insert(t);
            shared
                .alert(&p.name, &c.service, "down", "the container is not running")
                .await;
            if t - since >= 3 && t >= track.next_heal {
                track.heal_started(t, 5);
                shared
                    .event(
                        &p.name,
                        &c.service,
                        "heal_start",
                        &format!("down for {}s; starting it", t - since),
                    )
                    .await;
                if let Err(e) = engine.start(&c.id).await {
                    shared
                        .event(&p.name, &c.service, "heal_failed", &format!("{e:#}"))
                        .await;
                }
            }
        } else if c.state == "running"
            // a list read before the container died shows it running: no news of it
            && track.died_at.is_none_or(|d| d < listed_at)
        {
            track.down_since = None;
            shared
                .resolve(&p.name, &c.service, "down", "running again")
                .await;
            shared
                .resolve(&p.name, &c.service, "crash_loop", "running again")
                .await;
        }
    }
}
