//! The memory governor: pause, then stop, by priority above the high watermark; resume
//! below the low one.

use super::State;
use crate::projects::Project;
use crate::shared::Shared;
use homebase_engine::Container;
use homebase_engine::Engine;
use homebase_stack::config::Priority;
use std::sync::Arc;

/// Above the high watermark: pause batch services first (largest first), then normal; never
/// critical. A paused service that still holds the stack above the mark is stopped. Below
/// the low watermark: resume in the reverse order.
pub(super) async fn govern(
    engine: &Engine,
    shared: &Arc<Shared>,
    st: &mut State,
    p: &Project,
    watched: &[&Container],
    total: u64,
    t: i64,
) {
    if p.budget == 0 {
        return;
    }
    let d = &p.daemon;
    let high = (p.budget as f64 * d.high_watermark) as u64;
    let low = (p.budget as f64 * d.low_watermark) as u64;
    let pct = 100.0 * total as f64 / p.budget as f64;
    let before = st.governed.get(&p.name).cloned().unwrap_or_default();
    govern_round(engine, shared, st, p, watched, total, t, high, low, pct).await;
    let after = st.governed.get(&p.name).cloned().unwrap_or_default();
    if after != before
        && let Err(e) = shared.store.save_governed(&p.name, &after)
    {
        tracing::warn!("cannot record what the governor holds: {e:#}");
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn govern_round(
    engine: &Engine,
    shared: &Arc<Shared>,
    st: &mut State,
    p: &Project,
    watched: &[&Container],
    total: u64,
    t: i64,
    high: u64,
    low: u64,
    pct: f64,
) {
    let d = &p.daemon;
    if total > high {
        shared
            .alert(
                &p.name,
                "",
                "memory",
                &format!(
                    "the stack uses {pct:.0}% of its budget (high watermark {:.0}%)",
                    d.high_watermark * 100.0
                ),
            )
            .await;
        if let Some((c, class)) = next_to_pause(st, p, watched) {
            let msg = format!(
                "paused: the stack is at {pct:.0}% of its budget, above the {:.0}% high watermark; `{}` is {}",
                d.high_watermark * 100.0,
                c.service,
                class.as_str()
            );
            match engine.pause(&c.id).await {
                Ok(()) => {
                    st.governed.entry(p.name.clone()).or_default().push((
                        c.service.clone(),
                        c.id.clone(),
                        "paused",
                    ));
                    shared
                        .event(&p.name, &c.service, "governor_pause", &msg)
                        .await;
                }
                Err(e) => {
                    shared
                        .event(&p.name, &c.service, "governor_failed", &format!("{e:#}"))
                        .await
                }
            }
            return;
        }
        let governed = st.governed.entry(p.name.clone()).or_default();
        // Everything pausable is paused and the stack is still too big: stop the first paused.
        if let Some(entry) = governed.iter_mut().find(|(_, _, how)| *how == "paused") {
            let msg = format!(
                "stopped: still at {pct:.0}% of the budget with every batch and normal service paused"
            );
            let _ = engine.unpause(&entry.1).await;
            if engine.stop(&entry.1).await.is_ok() {
                entry.2 = "stopped";
                shared.event(&p.name, &entry.0, "governor_stop", &msg).await;
            }
        }
    } else if total < low {
        let governed = st.governed.entry(p.name.clone()).or_default();
        if let Some((service, id, how)) = governed.pop() {
            let r = if how == "paused" {
                engine.unpause(&id).await
            } else {
                engine.start(&id).await
            };
            let msg = format!(
                "resumed: the stack is back at {pct:.0}% of its budget, under the {:.0}% low watermark",
                d.low_watermark * 100.0
            );
            match r {
                Ok(()) => {
                    shared
                        .event(&p.name, &service, "governor_resume", &msg)
                        .await
                }
                Err(e) => {
                    shared
                        .event(&p.name, &service, "governor_failed", &format!("{e:#}"))
                        .await
                }
            }
        }
        if governed.is_empty() {
            shared
                .resolve(
                    &p.name,
                    "",
                    "memory",
                    &format!("the stack is back at {pct:.0}% of its budget"),
                )
                .await;
        }
    }
    let _ = t;
}

/// The running service to pause next: of the first class (batch, then normal) that has
/// one not yet governed, the largest user of memory; never a critical one, never a swarm
/// task (Swarm would replace it).
fn next_to_pause<'c>(
    st: &State,
    p: &Project,
    watched: &[&'c Container],
) -> Option<(&'c Container, Priority)> {
    let governed = st.governed.get(&p.name);
    let candidates: Vec<&Container> = watched
        .iter()
        .copied()
        .filter(|c| {
            c.project == p.name
                && c.state == "running"
                && !c.swarm
                && !governed.is_some_and(|g| g.iter().any(|(s, _, _)| *s == c.service))
        })
        .collect();
    let memory = |c: &Container| {
        st.tracks
            .get(&c.id)
            .and_then(|t| t.last)
            .map(|r| r.memory)
            .unwrap_or(0)
    };
    [Priority::Batch, Priority::Normal]
        .into_iter()
        .find_map(|class| {
            candidates
                .iter()
                .copied()
                .filter(|c| {
                    p.priorities
                        .get(&c.service)
                        .copied()
                        .unwrap_or(Priority::Normal)
                        == class
                })
                // the largest user first; ties in the order the engine listed them
                .min_by_key(|c| std::cmp::Reverse(memory(c)))
                .map(|c| (c, class))
        })
}
