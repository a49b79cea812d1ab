//! The state the watch loop, the loops' supervisors and the API share, and how an event
//! or an alert reaches the store, the sinks and the live clients.

use crate::alerts::Alert;
use crate::alerts::Alerts;
use crate::monitor::Snapshot;
use crate::store::Store;
use crate::{alerts, api, loops, projects};
use homebase_proto::clock::now;
use homebase_stack::config::AlertsSection;
use std::collections::HashMap;
use std::path::PathBuf;
use tokio::sync::RwLock;
use tokio::sync::{Mutex, broadcast};
/// State shared by the watch loop and the API.
pub struct Shared {
    pub home: PathBuf,
    /// Empty: every project.
    pub only: Vec<String>,
    pub host: String,
    pub store: Store,
    pub token: String,
    pub snapshot: RwLock<Snapshot>,
    pub alerts: Mutex<Alerts>,
    /// Alert sinks per project, refreshed every round.
    pub sinks: Mutex<HashMap<String, AlertsSection>>,
    /// Live updates for SSE clients (JSON text).
    pub tx: broadcast::Sender<String>,
    /// Wakes the watch loop for a round now (after an event), so clients see the change at once.
    pub wake: tokio::sync::Notify,
    /// The agent loops' supervisors.
    pub loops: Mutex<loops::Registry>,
    /// The agent loops' latest state, by (project, loop).
    pub loop_status:
        RwLock<std::collections::BTreeMap<(String, String), homebase_proto::LoopStatus>>,
    /// Dashboard sessions (id → expiry) and one-time login codes (code → expiry). Neither is
    /// the token: a code may show in a browser's command line.
    pub sessions: api::Sessions,
    /// The projects, read once per release (see [`projects::Watcher`]).
    pub watcher: projects::Watcher,
}

impl Shared {
    /// The projects to watch now (a deploy or a rollback changes them).
    pub fn projects(&self, mem_total: u64) -> (Vec<projects::Project>, Vec<String>) {
        let (mut p, e) = self.watcher.load(&self.home, mem_total);
        if !self.only.is_empty() {
            p.retain(|p| self.only.contains(&p.name));
        }
        (p, e)
    }

    pub async fn event(&self, project: &str, service: &str, kind: &str, message: &str) {
        let t = now();
        if let Err(e) = self.store.add_event(t, project, service, kind, message) {
            tracing::warn!("cannot record event: {e:#}");
        }
        self.notify_event(project, service, kind, message);
    }

    pub fn notify_event(&self, project: &str, service: &str, kind: &str, message: &str) {
        let msg = homebase_proto::StreamMessage::Event {
            ts: now(),
            project: project.into(),
            service: service.into(),
            kind: kind.into(),
            message: message.into(),
        };
        if let Ok(text) = serde_json::to_string(&msg) {
            let _ = self.tx.send(text);
        }
    }

    fn firing(&self, project: &str, service: &str, kind: &str, message: &str) -> Alert {
        Alert {
            kind: kind.into(),
            project: project.into(),
            service: service.into(),
            message: message.into(),
            status: "firing".into(),
            time: now(),
            host: self.host.clone(),
        }
    }

    /// A project's alert cooldown (seconds).
    async fn cooldown(&self, project: &str) -> i64 {
        self.sinks
            .lock()
            .await
            .get(project)
            .map(|s| s.cooldown_secs as i64)
            .unwrap_or(300)
    }

    pub async fn alert(&self, project: &str, service: &str, kind: &str, message: &str) {
        let a = self.firing(project, service, kind, message);
        let cooldown = self.cooldown(project).await;
        let fired = self.alerts.lock().await.fire(a, cooldown);
        if let Some(a) = fired {
            self.send(a).await;
        }
    }

    /// A one-shot alert: notifies for every occurrence (cooldown apart), never stays active.
    /// A one-off notice to the channels (a run completed, a maximum reached): recorded as
    /// `alert_notice`, never an active alert.
    pub async fn notify(&self, project: &str, service: &str, kind: &str, message: &str) {
        let mut a = self.firing(project, service, kind, message);
        a.status = "notice".into();
        let cooldown = self.cooldown(project).await;
        let fired = self.alerts.lock().await.fire_once(a, cooldown);
        if let Some(a) = fired {
            self.send(a).await;
        }
    }

    pub async fn resolve(&self, project: &str, service: &str, kind: &str, message: &str) {
        let r = self
            .alerts
            .lock()
            .await
            .resolve(project, service, kind, now(), message);
        if let Some(a) = r {
            self.send(a).await;
        }
    }

    async fn send(&self, a: Alert) {
        self.event(
            &a.project,
            &a.service,
            &format!("alert_{}", a.status),
            &format!("{}: {}", a.kind, a.message),
        )
        .await;
        let Some(sinks) = self.sinks.lock().await.get(&a.project).cloned() else {
            return;
        };
        tokio::task::spawn_blocking(move || {
            for e in alerts::deliver(&sinks, &a) {
                tracing::warn!("alert delivery failed: {e}");
            }
        });
    }

    pub async fn publish(&self, snapshot: Snapshot) {
        let msg = homebase_proto::StreamMessage::Snapshot { snapshot };
        let text = serde_json::to_string(&msg).ok();
        if let homebase_proto::StreamMessage::Snapshot { snapshot } = msg {
            *self.snapshot.write().await = snapshot;
        }
        if let Some(text) = text {
            let _ = self.tx.send(text);
        }
    }
}
