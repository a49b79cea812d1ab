//! Alerts: raised when a condition starts, deduplicated with a cooldown, "resolved" when it
//! clears; delivered to a generic JSON webhook, ntfy, Slack and Discord.

use std::collections::HashMap;

use homebase_stack::config::AlertsSection;

pub use homebase_proto::Alert;

#[derive(Default)]
pub struct Alerts {
    active: HashMap<String, Alert>,
    last_sent: HashMap<String, i64>,
}

impl Alerts {
    /// Raises an alert; returns it when it should be delivered (new, or past its cooldown).
    pub fn fire(&mut self, a: Alert, cooldown: i64) -> Option<Alert> {
        let key = format!("{}/{}/{}", a.project, a.service, a.kind);
        let fresh = !self.active.contains_key(&key);
        self.active.insert(key.clone(), a.clone());
        let due = self
            .last_sent
            .get(&key)
            .is_none_or(|t| a.time - t >= cooldown);
        if fresh && due {
            self.last_sent.insert(key, a.time);
            return Some(a);
        }
        None
    }

    /// A one-shot alert (an OOM kill, a loop that ran out of iterations): sent like a new
    /// condition (the cooldown still holds back a burst), and never left active, so the next
    /// occurrence notifies again.
    pub fn fire_once(&mut self, a: Alert, cooldown: i64) -> Option<Alert> {
        let key = format!("{}/{}/{}", a.project, a.service, a.kind);
        let due = self
            .last_sent
            .get(&key)
            .is_none_or(|t| a.time - t >= cooldown);
        if due {
            self.last_sent.insert(key, a.time);
            return Some(a);
        }
        None
    }

    /// Clears a condition; returns the "resolved" notice when it was active.
    pub fn resolve(
        &mut self,
        project: &str,
        service: &str,
        kind: &str,
        time: i64,
        message: &str,
    ) -> Option<Alert> {
        let key = format!("{project}/{service}/{kind}");
        let mut a = self.active.remove(&key)?;
        a.status = "resolved".into();
        a.time = time;
        a.message = message.to_string();
        Some(a)
    }

    pub fn is_active(&self, project: &str, service: &str, kind: &str) -> bool {
        self.active
            .contains_key(&format!("{project}/{service}/{kind}"))
    }

    pub fn active(&self) -> Vec<Alert> {
        let mut v: Vec<Alert> = self.active.values().cloned().collect();
        v.sort_by(|a, b| (a.time, &a.project, &a.service).cmp(&(b.time, &b.project, &b.service)));
        v
    }
}

/// The names of the configured sinks.
pub fn sink_names(sinks: &AlertsSection) -> Vec<String> {
    [
        ("webhook", &sinks.webhook),
        ("ntfy", &sinks.ntfy),
        ("slack", &sinks.slack),
        ("discord", &sinks.discord),
    ]
    .iter()
    .filter(|(_, url)| url.is_some())
    .map(|(n, _)| n.to_string())
    .collect()
}

/// Sends one alert to every configured sink. Blocking: call from a blocking task. Failures
/// are returned, one line each, never fatal.
pub fn deliver(sinks: &AlertsSection, a: &Alert) -> Vec<String> {
    let title = format!("[{}] {} {}/{}", a.status, a.kind, a.project, a.service);
    let text = format!("{title}: {} (host {})", a.message, a.host);
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(std::time::Duration::from_secs(10)))
            .build(),
    );
    let mut errors = Vec::new();
    let mut send = |name: &str, r: Result<ureq::http::Response<ureq::Body>, ureq::Error>| {
        if let Err(e) = r {
            errors.push(format!("{name}: {e}"));
        }
    };
    if let Some(url) = &sinks.webhook {
        send("webhook", agent.post(url).send_json(a));
    }
    if let Some(url) = &sinks.ntfy {
        let priority = if a.status == "resolved" {
            "default"
        } else {
            "high"
        };
        send(
            "ntfy",
            agent
                .post(url)
                .header("Title", &title)
                .header("Priority", priority)
                .send(a.message.as_bytes()),
        );
    }
    if let Some(url) = &sinks.slack {
        send(
            "slack",
            agent
                .post(url)
                .send_json(serde_json::json!({ "text": text })),
        );
    }
    if let Some(url) = &sinks.discord {
        send(
            "discord",
            agent
                .post(url)
                .send_json(serde_json::json!({ "content": text })),
        );
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(t: i64) -> Alert {
        Alert {
            kind: "down".into(),
            project: "p".into(),
            service: "db".into(),
            message: "m".into(),
            status: "firing".into(),
            time: t,
            host: "h".into(),
        }
    }

    #[test]
    fn one_shot_alerts_repeat_after_the_cooldown() {
        let mut a = Alerts::default();
        assert!(a.fire_once(alert(100), 300).is_some());
        assert!(
            a.fire_once(alert(200), 300).is_none(),
            "a burst is held back"
        );
        assert!(
            a.fire_once(alert(500), 300).is_some(),
            "a repeat notifies again"
        );
        assert!(a.active().is_empty());
    }

    #[test]
    fn deduplicates_with_cooldown_and_resolves() {
        let mut a = Alerts::default();
        assert!(a.fire(alert(0), 300).is_some());
        assert!(
            a.fire(alert(10), 300).is_none(),
            "still active: not sent again"
        );
        let r = a.resolve("p", "db", "down", 20, "back").unwrap();
        assert_eq!(r.status, "resolved");
        assert!(a.resolve("p", "db", "down", 21, "back").is_none());
        assert!(a.fire(alert(30), 300).is_none(), "within cooldown");
        a.resolve("p", "db", "down", 40, "back");
        assert!(a.fire(alert(400), 300).is_some(), "past cooldown");
    }
}
