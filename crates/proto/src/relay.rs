//! The way in from anywhere: the host keeps a reverse SSH tunnel to a relay (any SSH server
//! both sides reach), so that the laptop reaches the host's sshd through the relay's
//! loopback with no inbound port at home. `homebase setup` writes [`RelaySettings`]; the
//! daemon keeps the tunnel and writes [`RelayState`]; `setup --check` and `preflight` read
//! it back.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What the daemon keeps up: `ssh -R 127.0.0.1:<listen_port>:127.0.0.1:<to_port>` to the
/// relay, with the host's own key and the relay's key as the laptop knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RelaySettings {
    /// The relay's account and address, as the host reaches it (`user@host`).
    pub destination: String,
    /// The relay's sshd port.
    pub port: u16,
    /// The port on the relay's loopback that leads to this host's sshd.
    pub listen_port: u16,
    /// This host's sshd, on its own loopback.
    pub to_port: u16,
}

impl RelaySettings {
    /// The destination is `user@host` or `host`: no option, no space, no control character
    /// (it becomes an argument of ssh on the host; setup writes nothing else, the daemon
    /// takes nothing else).
    pub fn plain_destination(&self) -> bool {
        let d = &self.destination;
        !d.is_empty()
            && !d.starts_with('-')
            && d.chars()
                .all(|c| c.is_ascii_alphanumeric() || "@._-:[]".contains(c))
    }
}

/// The tunnel as the daemon last saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RelayState {
    /// `up`, `connecting`, `down`.
    pub state: String,
    /// Since when (unix seconds) it is in that state.
    pub since: u64,
    /// The relay, as in the settings.
    pub destination: String,
    pub listen_port: u16,
    /// Why the last attempt failed, in ssh's words (one line).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// How many times the tunnel was (re)established since the daemon started.
    pub connects: u64,
}

#[cfg(test)]
mod tests {
    use super::RelaySettings;

    #[test]
    fn a_destination_that_is_an_option_is_refused() {
        let s = |d: &str| RelaySettings {
            destination: d.into(),
            port: 22,
            listen_port: 2222,
            to_port: 22,
        };
        assert!(s("me@relay.example.com").plain_destination());
        assert!(s("hb12@10.231.0.22").plain_destination());
        for bad in ["-oProxyCommand=sh", "me@relay x", "", "me@relay\n-o"] {
            assert!(!s(bad).plain_destination(), "{bad:?}");
        }
    }
}
