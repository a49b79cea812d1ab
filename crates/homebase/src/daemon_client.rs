//! The laptop's way to the host daemon's API: read its endpoint and token on the host (one
//! command), forward a local port to it on the command's SSH master, and call it with the
//! token. The token is read into memory only, never printed.

use std::time::Duration;

use anyhow::{Context, Result};
use homebase_remote::Session;
use serde::de::DeserializeOwned;

pub struct DaemonClient {
    base: String,
    token: String,
    agent: ureq::Agent,
    /// Where the daemon listens on the host (`127.0.0.1:7780`).
    pub endpoint: String,
}

/// Why the daemon cannot be reached.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error(
        "the homebase daemon is not installed on {host}; run `homebase setup` to install it as a service"
    )]
    NotInstalled { host: String },
    #[error(
        "the homebase daemon on {host} does not answer at {endpoint}: {reason}; check `systemctl --user status homebase-daemon` (or launchd's log on a Mac) on the host"
    )]
    NotAnswering {
        host: String,
        endpoint: String,
        reason: String,
    },
}

/// Where the daemon listens on the host and its token, read from its state directory
/// (`dir`, default `~/.homebase/daemon`) in one command.
pub struct Located {
    pub endpoint: String,
    pub port: u16,
    pub token: String,
}

pub fn locate(session: &Session, dir: Option<&str>) -> Result<Located, Unavailable> {
    let dir = match dir {
        Some(d) => homebase_remote::sh_quote(d),
        None => "\"$HOME/.homebase/daemon\"".to_string(),
    };
    let files = session.run(&format!(
        "cat {dir}/endpoint 2>/dev/null && echo && cat {dir}/token 2>/dev/null"
    ));
    let text = files
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    let mut lines = text.lines();
    let (Some(endpoint), Some(token)) = (lines.next(), lines.next()) else {
        return Err(Unavailable::NotInstalled {
            host: session.host(),
        });
    };
    let endpoint = endpoint.trim().to_string();
    let port = endpoint
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .ok_or_else(|| Unavailable::NotAnswering {
            host: session.host(),
            endpoint: endpoint.clone(),
            reason: format!("`{endpoint}` is not an address"),
        })?;
    Ok(Located {
        endpoint,
        port,
        token: token.trim().to_string(),
    })
}

impl DaemonClient {
    pub fn connect(session: &Session, dir: Option<&str>) -> Result<DaemonClient, Unavailable> {
        let Located {
            endpoint,
            port,
            token,
        } = locate(session, dir)?;
        let not_answering = |reason: String| Unavailable::NotAnswering {
            host: session.host(),
            endpoint: endpoint.clone(),
            reason,
        };
        let local = session
            .forward_local("127.0.0.1", port)
            .map_err(|e| not_answering(format!("{e:#}")))?;
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(10)))
                .http_status_as_error(false)
                .build(),
        );
        Ok(DaemonClient {
            base: format!("http://127.0.0.1:{local}"),
            token,
            agent,
            endpoint,
        })
    }

    /// GET `path` as JSON; a non-2xx answer is an error carrying the daemon's message.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let mut r = self
            .agent
            .get(&format!("{}{path}", self.base))
            .header("Authorization", &format!("Bearer {}", self.token))
            .call()
            .with_context(|| format!("cannot reach the daemon at {} ({path})", self.endpoint))?;
        let code = r.status().as_u16();
        if !(200..300).contains(&code) {
            let body = r.body_mut().read_to_string().unwrap_or_default();
            anyhow::bail!("the daemon answered {code} to {path}: {}", body.trim());
        }
        r.body_mut()
            .read_json()
            .with_context(|| format!("the daemon's answer to {path} is not what homebase expects"))
    }

    /// POST `path`; returns the status code and the body (JSON on success, a sentence otherwise).
    pub fn post(&self, path: &str) -> Result<(u16, String)> {
        let mut r = self
            .agent
            .post(&format!("{}{path}", self.base))
            .header("Authorization", &format!("Bearer {}", self.token))
            .send_empty()
            .with_context(|| format!("cannot reach the daemon at {} ({path})", self.endpoint))?;
        let code = r.status().as_u16();
        let body = r.body_mut().read_to_string().unwrap_or_default();
        Ok((code, body))
    }
}
