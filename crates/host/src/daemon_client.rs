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
    #[error("cannot read where the homebase daemon listens on {host}: {reason}")]
    Unreachable { host: String, reason: String },
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
        None => homebase_proto::layout::sh_daemon(),
    };
    let files = session.run(&format!(
        "cat {dir}/endpoint 2>/dev/null && echo && cat {dir}/token 2>/dev/null"
    ));
    let text = files
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .map_err(|e| Unavailable::Unreachable {
            host: session.host(),
            reason: e.to_string(),
        })?;
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
        let (code, body) = self.get_text(path)?;
        json_answer(path, code, &body)
    }

    /// GET `path`; returns the status code and the body.
    pub fn get_text(&self, path: &str) -> Result<(u16, String)> {
        let r = self
            .agent
            .get(&format!("{}{path}", self.base))
            .header("Authorization", &format!("Bearer {}", self.token))
            .call();
        self.answer(r, path)
    }

    /// POST `path`; returns the status code and the body (JSON on success, a sentence otherwise).
    pub fn post(&self, path: &str) -> Result<(u16, String)> {
        let r = self
            .agent
            .post(&format!("{}{path}", self.base))
            .header("Authorization", &format!("Bearer {}", self.token))
            .send_empty();
        self.answer(r, path)
    }

    /// A request's status code and whole body; a daemon that cannot be reached, or whose
    /// answer is cut, is an error naming it and `path`.
    fn answer(
        &self,
        sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        path: &str,
    ) -> Result<(u16, String)> {
        let mut r =
            sent.with_context(|| format!("cannot reach the daemon at {} ({path})", self.endpoint))?;
        let code = r.status().as_u16();
        let body = r.body_mut().read_to_string().with_context(|| {
            format!("the daemon at {}'s answer to {path} was cut", self.endpoint)
        })?;
        Ok((code, body))
    }
}

/// Whether the daemon answers `/api/status` on its loopback API with its token, asked on
/// the host (30 tries, half a second apart when `wait`, as after a start); one command.
pub fn answers(session: &Session, wait: bool) -> Result<bool> {
    let answer = session.run(&format!(
        // the token goes to curl on stdin (printf is a builtin), never on a command line
        "for i in $(seq 30); do e=$(cat {e} 2>/dev/null) && t=$(cat {t} 2>/dev/null) && printf 'header = \"Authorization: Bearer %s\"\\n' \"$t\" | curl -sf --config - \"http://$e/api/status\" >/dev/null 2>&1 && echo up && exit 0; sleep {}; done; echo down",
        if wait { "0.5" } else { "0" },
        e = homebase_proto::layout::sh_daemon_file(homebase_proto::layout::ENDPOINT),
        t = homebase_proto::layout::sh_daemon_file(homebase_proto::layout::TOKEN),
    ))?;
    Ok(String::from_utf8_lossy(&answer.stdout).contains("up"))
}

/// A one-time sign-in code from the daemon, through the forward, with the token.
pub fn login_code(port: u16, token: &str) -> Result<String> {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .build(),
    );
    let answer: homebase_proto::LoginCode = agent
        .post(&format!("http://127.0.0.1:{port}/api/login-code"))
        .header("Authorization", &format!("Bearer {token}"))
        .send_empty()
        .context("cannot get a sign-in code from the daemon through the forward")?
        .body_mut()
        .read_json()
        .context("the daemon's sign-in code is not what homebase expects")?;
    Ok(answer.code)
}

/// One request to the daemon in one command: asked on the host with curl there (see
/// [`on_host`]), or through a forward when the host has no curl. Returns the status code
/// and the body.
pub fn request(
    session: &Session,
    dir: Option<&str>,
    method: &str,
    path: &str,
) -> Result<(u16, String)> {
    let script = format!(
        "{}case \"$hb_d\" in running*) ;; *) printf '%s\\n' \"$hb_d\"; exit 0;; esac; \
         printf '%s\\n' \"$hb_d\"; printf 'header = \"Authorization: Bearer %s\"\\n' \"$(cat \"$hb_dd/token\")\" | \
         curl -s -m 10 -K - -X {} -w '\\n%{{http_code}}' \"http://$hb_ep\"{} || echo",
        on_host::ask(dir, &[]),
        homebase_remote::sh_quote(method),
        homebase_remote::sh_quote(path),
    );
    let out = session.check(&script)?;
    let (state, rest) = out.split_once('\n').unwrap_or((out.as_str(), ""));
    let state = state.trim();
    if state == "nocurl" {
        let client = DaemonClient::connect(session, dir)?;
        return if method == "POST" {
            client.post(path)
        } else {
            client.get_text(path)
        };
    }
    if let Some(ep) = state.strip_prefix("running ") {
        let (body, code) = rest
            .trim_end()
            .rsplit_once('\n')
            .unwrap_or(("", rest.trim()));
        return match code.trim().parse::<u16>() {
            Ok(c) if c > 0 => Ok((c, body.to_string())),
            _ => Err(Unavailable::NotAnswering {
                host: session.host(),
                endpoint: ep.to_string(),
                reason: format!("no answer to {path}"),
            }
            .into()),
        };
    }
    if let Some(ep) = state.strip_prefix("notanswering ") {
        return Err(Unavailable::NotAnswering {
            host: session.host(),
            endpoint: ep.to_string(),
            reason: "its API did not answer".into(),
        }
        .into());
    }
    Err(Unavailable::NotInstalled {
        host: session.host(),
    }
    .into())
}

/// GET `path` as JSON in one command (see [`request`]); a non-2xx answer is an error
/// carrying the daemon's message.
pub fn get_json<T: DeserializeOwned>(
    session: &Session,
    dir: Option<&str>,
    path: &str,
) -> Result<T> {
    let (code, body) = request(session, dir, "GET", path)?;
    json_answer(path, code, &body)
}

/// A 2xx answer as JSON; otherwise an error carrying the daemon's message (host text, shown
/// escaped).
fn json_answer<T: DeserializeOwned>(path: &str, code: u16, body: &str) -> Result<T> {
    if !(200..300).contains(&code) {
        anyhow::bail!(
            "the daemon answered {code} to {path}: {}",
            homebase_proto::text::printable(body.trim())
        );
    }
    serde_json::from_str(body)
        .with_context(|| format!("the daemon's answer to {path} is not what homebase expects"))
}

/// Asking the daemon on the host itself, inside a command's script: no forward, no extra
/// round trip. The script's `curl` reads the token from the daemon's state directory and
/// gets it on stdin (`-K -`), never in an argument list other users could see.
pub mod on_host {
    use homebase_remote::sh_quote;

    /// The separator after each answer (JSON answers are one line each).
    pub const SEP: &str = "@@HBD@@";

    /// Shell that asks for each of `paths` (GET) into `hb_a0`, `hb_a1`, … and sets `hb_d`
    /// to `running EP`, `notanswering EP`, `notinstalled` or `nocurl` (with no paths,
    /// `running EP` means only that the daemon's files are there). Prints nothing; defines
    /// `hb_get PATH`.
    pub fn ask(dir: Option<&str>, paths: &[String]) -> String {
        let dir = match dir {
            Some(d) => sh_quote(d),
            None => homebase_proto::layout::sh_daemon(),
        };
        let mut asks = String::new();
        if paths.is_empty() {
            asks.push_str("true");
        }
        for (i, p) in paths.iter().enumerate() {
            if i > 0 {
                asks.push_str(" && ");
            }
            asks.push_str(&format!("hb_a{i}=$(hb_get {})", sh_quote(p)));
        }
        format!(
            "hb_dd={dir}; hb_d=notinstalled; \
             if [ -f \"$hb_dd/endpoint\" ] && [ -f \"$hb_dd/token\" ]; then \
               if command -v curl >/dev/null 2>&1; then \
                 hb_ep=$(cat \"$hb_dd/endpoint\"); \
                 hb_get() {{ printf 'header = \"Authorization: Bearer %s\"\\n' \"$(cat \"$hb_dd/token\")\" | curl -sf -m 3 -K - \"http://$hb_ep$1\"; }}; \
                 if {asks}; then hb_d=\"running $hb_ep\"; else hb_d=\"notanswering $hb_ep\"; fi; \
               else hb_d=nocurl; fi; \
             fi; "
        )
    }

    /// Shell that prints what [`ask`] found: the `hb_d` line, then each answer and [`SEP`].
    pub fn print(n: usize) -> String {
        let mut s = "printf '%s\\n' \"$hb_d\"; ".to_string();
        for i in 0..n {
            s.push_str(&format!("printf '%s\\n{SEP}\\n' \"$hb_a{i}\"; "));
        }
        s
    }

    /// What the daemon said, read back from [`print`]'s output.
    #[derive(Debug, PartialEq)]
    pub enum Answer {
        Running {
            endpoint: String,
            bodies: Vec<String>,
        },
        NotAnswering {
            endpoint: String,
        },
        NotInstalled,
        /// The host has no curl: ask through a forward instead.
        NoCurl,
    }

    pub fn parse(out: &str, n: usize) -> Answer {
        let mut lines = out.splitn(2, '\n');
        let state = lines.next().unwrap_or("").trim();
        let rest = lines.next().unwrap_or("");
        if let Some(ep) = state.strip_prefix("running ") {
            let bodies: Vec<String> = rest
                .split(&format!("\n{SEP}\n"))
                .take(n)
                .map(|b| b.trim().to_string())
                .collect();
            if bodies.len() == n {
                return Answer::Running {
                    endpoint: ep.to_string(),
                    bodies,
                };
            }
            return Answer::NotAnswering {
                endpoint: ep.to_string(),
            };
        }
        match state.strip_prefix("notanswering ") {
            Some(ep) => Answer::NotAnswering {
                endpoint: ep.to_string(),
            },
            None if state == "nocurl" => Answer::NoCurl,
            None => Answer::NotInstalled,
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn answers_are_read_back() {
            let out = format!("running 127.0.0.1:7780\n{{\"a\":1}}\n{SEP}\n[]\n{SEP}\n");
            assert_eq!(
                parse(&out, 2),
                Answer::Running {
                    endpoint: "127.0.0.1:7780".into(),
                    bodies: vec!["{\"a\":1}".into(), "[]".into()]
                }
            );
            assert_eq!(parse("nocurl\n", 2), Answer::NoCurl);
            assert_eq!(parse("notinstalled\n", 1), Answer::NotInstalled);
            assert_eq!(
                parse("notanswering 127.0.0.1:1\n", 1),
                Answer::NotAnswering {
                    endpoint: "127.0.0.1:1".into()
                }
            );
        }
    }
}

/// The note of the warm connection that remembers where the host's daemon listens, so that
/// `tunnel --check` can probe it at once (it checks that the note still holds).
pub const DAEMON_NOTE: &str = "daemon-endpoint";

/// The port of a daemon endpoint as the host wrote it (`127.0.0.1:PORT`); bytes from the
/// host, so only a port is taken from them.
pub fn endpoint_port(endpoint: &str) -> Option<u16> {
    endpoint.rsplit(':').next()?.trim().parse().ok()
}

/// Remembers on the warm connection where the daemon listens.
pub fn remember_endpoint(session: &homebase_remote::Session, endpoint: &str) {
    if let Some(port) = endpoint_port(endpoint) {
        session.set_note(DAEMON_NOTE, &format!("127.0.0.1:{port}"));
    }
}
