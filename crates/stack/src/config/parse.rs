//! Reading homebase.toml: the file, then `HOMEBASE__…` variables over it, then the checks
//! that need the whole of it.

use super::Config;
use super::ConfigError;
use super::ENV_PREFIX;
use super::HostSection;
use super::Mode;
use indexmap::IndexMap;
use std::path::Path;

impl Config {
    /// Parses `text` (read from `path`) and applies `HOMEBASE__…` variables from `env`.
    pub fn parse(
        path: &Path,
        text: &str,
        env: &IndexMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: path.to_path_buf(),
                    message: e.to_string().trim_end().to_string(),
                })?;
        apply_env(&mut table, env)?;
        let config: Config = table
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string().trim_end().to_string(),
            })?;
        config.validate(path)?;
        Ok(config)
    }

    pub fn load(path: &Path, env: &IndexMap<String, String>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(path, &text, env)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let err = |message: String| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let name = &self.project.name;
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
            && name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric());
        if !valid {
            return Err(err(format!(
                "project.name `{name}` is not a valid Compose project name: use lowercase letters, digits, `-` and `_`, starting with a letter or digit"
            )));
        }
        if self.project.compose.is_empty() {
            return Err(err(
                "project.compose is empty: name at least one compose file".into(),
            ));
        }
        if !(self.budget.target > 0.0 && self.budget.target <= 1.0) {
            return Err(err(format!(
                "budget.target = {} is out of range: give the share of host memory the stack may use, between 0 and 1 (for example 0.80)",
                self.budget.target
            )));
        }
        let d = &self.daemon;
        if !(0.0 < d.low_watermark && d.low_watermark < d.high_watermark && d.high_watermark <= 1.0)
        {
            return Err(err(format!(
                "daemon.low_watermark ({}) must be below daemon.high_watermark ({}), both between 0 and 1",
                d.low_watermark, d.high_watermark
            )));
        }
        if !matches!(self.backup.schedule.as_str(), "daily" | "off") || self.backup.at_hour > 23 {
            return Err(err(format!(
                "backup.schedule = `{}`, at_hour = {}: use schedule = \"daily\" or \"off\" and an hour from 0 to 23 (UTC)",
                self.backup.schedule, self.backup.at_hour
            )));
        }
        if d.interval_ms < 200 {
            return Err(err(format!(
                "daemon.interval_ms = {} is too short: use 200 or more",
                d.interval_ms
            )));
        }
        for (name, l) in &self.loops {
            l.validate(name).map_err(err)?;
        }
        self.spend.validate().map_err(err)?;
        if !self.spend.caps().is_empty() && !self.loops.values().any(|l| l.reads_result()) {
            return Err(err(
                "[spend] caps what the loops' agents report, and no loop reads its agent's result: set output_format = \"json\" or \"stream-json\" on the loops (and run the agent with that output), or remove the caps".into(),
            ));
        }
        if self.project.mode == Mode::Swarm {
            if self.nodes.is_empty() {
                return Err(err(
                    "project.mode = \"swarm\" needs at least one [nodes.NAME] with an ssh destination".into(),
                ));
            }
            let managers = self.nodes.values().filter(|n| n.manager).count();
            if managers > 1 {
                return Err(err(format!(
                    "{managers} nodes say manager = true; homebase runs one manager: keep it on one node"
                )));
            }
            for (svc, s) in &self.services {
                if let Some(node) = &s.node
                    && !self.nodes.contains_key(node)
                {
                    let known: Vec<&str> = self.nodes.keys().map(String::as_str).collect();
                    return Err(err(format!(
                        "services.{svc}.node = `{node}` is not in [nodes]{}",
                        crate::error::did_you_mean(node, known.iter().copied())
                            .map(|s| format!("; did you mean `{s}`?"))
                            .unwrap_or_else(|| format!("; the nodes are: {}", known.join(", ")))
                    )));
                }
                for c in &s.placement {
                    crate::cluster::Constraint::parse(c)
                        .map_err(|e| err(format!("services.{svc}.placement: {e}")))?;
                }
            }
        } else if !self.nodes.is_empty() {
            return Err(err(
                "[nodes] is set but project.mode is not \"swarm\": add mode = \"swarm\" under [project], or remove [nodes]".into(),
            ));
        }
        self.host
            .validate(self.project.mode == Mode::Swarm)
            .map_err(err)?;
        for (svc, s) in &self.services {
            if let (Some(limit), Some(sustained)) = (s.memory, s.sustained)
                && sustained > limit
            {
                return Err(err(format!(
                    "services.{svc}: sustained ({sustained}) is above memory ({limit}); a reservation cannot exceed the limit: raise memory or lower sustained"
                )));
            }
        }
        Ok(())
    }
}

/// Overlays `HOMEBASE__A__B=value` onto the table at `a.b`. Values are read as TOML when
/// they parse as a TOML value (numbers, booleans, arrays), else as strings.
pub(super) fn apply_env(
    table: &mut toml::Table,
    env: &IndexMap<String, String>,
) -> Result<(), ConfigError> {
    for (var, value) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let parts: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if parts.iter().any(String::is_empty) || parts.len() < 2 {
            return Err(ConfigError::Env {
                var: var.clone(),
                message: "expected `HOMEBASE__SECTION__KEY` (sections and keys separated by double underscores)".into(),
            });
        }
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.clone()));
        let mut cur = &mut *table;
        for (i, part) in parts.iter().enumerate() {
            // service names may contain `-`, which environment names cannot
            let key = cur
                .keys()
                .find(|k| k.to_ascii_lowercase().replace('-', "_") == part.replace('-', "_"))
                .cloned()
                .unwrap_or_else(|| part.clone());
            if i == parts.len() - 1 {
                cur.insert(key, parsed.clone());
                break;
            }
            let entry = cur
                .entry(key)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(next) = entry else {
                return Err(ConfigError::Env {
                    var: var.clone(),
                    message: format!("`{part}` is not a section"),
                });
            };
            cur = next;
        }
    }
    Ok(())
}

impl HostSection {
    /// The ways to the host make sense: `also` and `[host.relay]` only for a remote host,
    /// each an ssh destination, the relay's port one its account may listen on.
    fn validate(&self, swarm: bool) -> Result<(), String> {
        if self.ssh == "local" && (!self.also.is_empty() || self.relay.is_some()) {
            return Err(
                "host.ssh is `local`: host.also and [host.relay] are ways to a remote host; set host.ssh to its ssh destination, or remove them".into(),
            );
        }
        if let Some(way) = self
            .also
            .iter()
            .find(|w| w.trim().is_empty() || w.as_str() == "local" || w.starts_with('-'))
        {
            return Err(format!(
                "host.also has `{way}`: each way is an ssh destination to the same host (`user@mini.tailnet.ts.net`)"
            ));
        }
        if let Some(r) = &self.relay {
            if r.ssh.trim().is_empty() || r.ssh == "local" || r.ssh.starts_with('-') {
                return Err(format!(
                    "host.relay.ssh = `{}` is not an ssh destination: name the relay as you reach it with ssh (`me@relay.example.com`)",
                    r.ssh
                ));
            }
            if r.tunnel_port < 1024 {
                return Err(format!(
                    "host.relay.tunnel_port = {} is a privileged port: the relay's account cannot listen on it; use a port from 1024 up (default 2222)",
                    r.tunnel_port
                ));
            }
            if swarm {
                return Err(
                    "[host.relay] is for one host; in swarm mode reach the manager through a tailnet or a VPN and set its address in [nodes]".into(),
                );
            }
        }
        Ok(())
    }
}
