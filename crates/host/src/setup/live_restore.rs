//! Docker's `live-restore`, turned on by `setup`: with it a restart of the engine (an
//! update, a crash of dockerd) leaves every container running instead of stopping the
//! whole stack until the engine is back.
//!
//! - On a Mac the engine is Colima's: the setting goes under `docker:` in
//!   `~/.colima/default/colima.yaml`, which Colima applies when its VM starts. Setup restarts
//!   Colima itself only while no container runs (a fresh host); otherwise it says the
//!   setting waits for Colima's next start.
//! - On Linux it goes into the engine's `daemon.json` (the `--config-file` of the dockerd
//!   serving this user, else `/etc/docker/daemon.json`), which takes root: setup uses
//!   `sudo -n` where the account may, reloads the engine (systemd's `reload docker`, or
//!   SIGHUP: live-restore is one of the settings dockerd reloads without a restart), checks
//!   the engine took it and puts the old file back when it did not. Without sudo it says
//!   what to run.
//! - Swarm nodes: Docker refuses live-restore in swarm mode (the swarm reschedules
//!   instead), so it is left off there, and said so.
//!
//! Each path costs two round trips (read, then write and check), only when the setting is
//! off.

use anyhow::{Context, Result};
use homebase_remote::Session;

use super::Item;
use super::Options;
use super::checks::Facts;

const NAME: &str = "live restore";

/// Turns live-restore on where the engine allows it (or reports why not), replacing the
/// checklist's `live restore` item with what happened.
pub(super) fn make_it_so(
    items: &mut [Item],
    session: &Session,
    f: &Facts,
    args: &Options,
    swarm: bool,
) -> Result<()> {
    let Some(i) = items.iter_mut().find(|i| i.name == NAME) else {
        return Ok(());
    };
    if swarm {
        *i = match f.live_restore {
            Some(true) => Item::new(
                NAME,
                "missing",
                "live-restore is on, and Docker refuses it in swarm mode",
                Some(
                    "remove \"live-restore\" from the engine's daemon.json (or colima.yaml) and reload the engine"
                        .into(),
                ),
            ),
            _ => Item::new(
                NAME,
                "ok",
                "off, as swarm mode needs (the swarm reschedules services itself)",
                None,
            ),
        };
        return Ok(());
    }
    if args.check || f.live_restore != Some(false) {
        return Ok(());
    }
    *i = if f.os == "Darwin" {
        colima(session)?
    } else {
        linux(session)?
    };
    Ok(())
}

/// Colima's configuration file, from the host's shell.
const COLIMA_YAML: &str = "\"${COLIMA_HOME:-$HOME/.colima}/default/colima.yaml\"";

fn colima(session: &Session) -> Result<Item> {
    let out = session
        .check(&format!(
            "echo \"running=$(docker ps -q 2>/dev/null | wc -l | tr -d ' ')\"; cat {COLIMA_YAML} 2>/dev/null; true"
        ))
        .context("cannot read Colima's configuration on the host")?;
    let (first, yaml) = out.split_once('\n').unwrap_or((&out, ""));
    let running: u64 = first
        .strip_prefix("running=")
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(1);
    let pending = "set in colima.yaml; Colima applies it at its next start";
    let fix = "colima stop && colima start (the containers restart once)";
    let text = match colima_with_live_restore(yaml) {
        Ok(Some(text)) => text,
        Ok(None) => return Ok(Item::new(NAME, "warning", pending, Some(fix.into()))),
        Err(why) => {
            return Ok(Item::new(
                NAME,
                "warning",
                format!("off, and colima.yaml cannot be edited: {why}"),
                Some("add `live-restore: true` under `docker:` in ~/.colima/default/colima.yaml, then `colima stop && colima start`".into()),
            ));
        }
    };
    let restart = running == 0;
    let out = session
        .check_with_input(
            &format!(
                "set -e; f={COLIMA_YAML}; mkdir -p \"$(dirname \"$f\")\"; t=\"$f.homebase.$$\"; cat > \"$t\"; mv \"$t\" \"$f\"
{}",
                if restart {
                    "colima stop >/dev/null 2>&1; colima start >/dev/null 2>&1
for _ in $(seq 100); do docker info >/dev/null 2>&1 && break; sleep 0.2; done
echo \"live_restore=$(docker info --format '{{.LiveRestoreEnabled}}' 2>/dev/null)\""
                } else {
                    ""
                }
            ),
            text.as_bytes(),
        )
        .context("cannot write Colima's configuration on the host")?;
    Ok(if !restart {
        Item::new(
            NAME,
            "changed",
            format!("{pending} ({running} containers run now, so setup did not restart it)"),
            Some(fix.into()),
        )
    } else if out.contains("live_restore=true") {
        Item::new(
            NAME,
            "changed",
            "set in colima.yaml and Colima restarted: containers keep running while the engine restarts",
            None,
        )
    } else {
        Item::new(
            NAME,
            "warning",
            "set in colima.yaml, but the engine does not report it after Colima restarted",
            Some("colima status; colima stop && colima start".into()),
        )
    })
}

/// Finds the dockerd serving this user (systemd's docker.service, the one listening on
/// DOCKER_HOST's socket, or the only one) and its configuration file.
const FIND_DOCKERD: &str = r#"
if ! sudo -n true 2>/dev/null; then echo "sudo=no"; exit 0; fi
pid=""; mgr=signal
if command -v systemctl >/dev/null 2>&1 && [ "$(systemctl is-active docker 2>/dev/null)" = active ]; then
  pid=$(systemctl show -p MainPID --value docker 2>/dev/null); mgr=systemd
fi
if [ -z "$pid" ] || [ "$pid" = 0 ]; then
  pid=""; mgr=signal
  case "${DOCKER_HOST:-}" in unix://*) sock=${DOCKER_HOST#unix://} ;; *) sock=/var/run/docker.sock ;; esac
  for p in $(pgrep -x dockerd); do
    tr '\0' '\n' < "/proc/$p/cmdline" 2>/dev/null | grep -qxF -e "unix://$sock" -e "-H=unix://$sock" -e "--host=unix://$sock" && pid=$p
  done
  if [ -z "$pid" ]; then set -- $(pgrep -x dockerd); [ $# = 1 ] && pid=$1; fi
fi
[ -n "$pid" ] || { echo "dockerd=unknown"; exit 0; }
cfg=$(tr '\0' '\n' < "/proc/$pid/cmdline" | sed -n 's/^--config-file=//p; /^--config-file$/{n;p;}' | head -1)
echo "pid=$pid"; echo "mgr=$mgr"; echo "cfg=${cfg:-/etc/docker/daemon.json}"
echo "---"
sudo -n cat "${cfg:-/etc/docker/daemon.json}" 2>/dev/null || true
"#;

fn linux(session: &Session) -> Result<Item> {
    let manual = "add \"live-restore\": true to /etc/docker/daemon.json (or the engine's --config-file), then `sudo systemctl reload docker`";
    let out = session
        .check(FIND_DOCKERD)
        .context("cannot find the engine's configuration on the host")?;
    let (head, config) = out.split_once("---\n").unwrap_or((&out, ""));
    let get = |k: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::trim)
    };
    let why = if get("sudo") == Some("no") {
        Some("off; changing it takes root, and this account cannot `sudo` without a password")
    } else if get("dockerd") == Some("unknown") {
        Some("off; homebase cannot tell which dockerd serves this account")
    } else {
        None
    };
    let (Some(pid), Some(mgr), Some(cfg)) = (get("pid"), get("mgr"), get("cfg")) else {
        return Ok(Item::new(
            NAME,
            "warning",
            why.unwrap_or("off; the engine's configuration could not be found"),
            Some(manual.into()),
        ));
    };
    let Some(text) = json_with_live_restore(config) else {
        return Ok(Item::new(
            NAME,
            "warning",
            format!("off, and {cfg} is not a JSON object homebase can edit"),
            Some(manual.into()),
        ));
    };
    if !pid.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(Item::new(NAME, "warning", "off", Some(manual.into())));
    }
    let q = homebase_remote::sh_quote(cfg);
    let reload = if mgr == "systemd" {
        "sudo -n systemctl reload docker".to_string()
    } else {
        format!("sudo -n kill -HUP {pid}")
    };
    let script = format!(
        r#"set -e; c={q}; b="$c.homebase-before"
had=no; if sudo -n test -f "$c"; then sudo -n cp -p "$c" "$b"; had=yes; fi
sudo -n mkdir -p "$(dirname "$c")"; t="$c.homebase.$$"
sudo -n tee "$t" >/dev/null; sudo -n chmod 644 "$t"; sudo -n mv "$t" "$c"
{reload}
for _ in $(seq 50); do
  if [ "$(docker info --format '{{{{.LiveRestoreEnabled}}}}' 2>/dev/null)" = true ]; then sudo -n rm -f "$b"; echo "live_restore=true"; exit 0; fi
  sleep 0.1
done
if [ $had = yes ]; then sudo -n mv "$b" "$c"; else sudo -n rm -f "$c"; fi
{reload}
echo "live_restore=refused""#
    );
    let out = session
        .check_with_input(&script, text.as_bytes())
        .with_context(|| format!("cannot change {cfg} on the host"))?;
    Ok(if out.contains("live_restore=true") {
        Item::new(
            NAME,
            "changed",
            format!(
                "turned on in {cfg} and the engine reloaded: containers keep running while it restarts"
            ),
            None,
        )
    } else {
        Item::new(
            NAME,
            "warning",
            format!("the engine did not take live-restore from {cfg}; the file is as it was"),
            Some("see the engine's log (journalctl -u docker) for why".into()),
        )
    })
}

/// `daemon.json` with `"live-restore": true`, its other keys kept in their order; `None`
/// when it is not a JSON object.
pub(super) fn json_with_live_restore(config: &str) -> Option<String> {
    let mut v: serde_json::Value = if config.trim().is_empty() {
        serde_json::json!({})
    } else {
        serde_json::from_str(config).ok()?
    };
    v.as_object_mut()?
        .insert("live-restore".into(), serde_json::Value::Bool(true));
    serde_json::to_string_pretty(&v).ok().map(|t| t + "\n")
}

/// Colima's `colima.yaml` with `live-restore: true` under `docker:`, edited as text so the
/// user's comments and layout stay; `Ok(None)` when it is already there, `Err` when the
/// file is not one homebase can edit safely. The result is parsed back to be sure.
pub(super) fn colima_with_live_restore(yaml: &str) -> Result<Option<String>, String> {
    let parsed = |text: &str| -> Result<Option<bool>, String> {
        if text.trim().is_empty() {
            return Ok(None);
        }
        let v: serde_norway::Value =
            serde_norway::from_str(text).map_err(|e| format!("it is not valid YAML ({e})"))?;
        Ok(v.get("docker")
            .and_then(|d| d.get("live-restore"))
            .and_then(|l| l.as_bool()))
    };
    if parsed(yaml)? == Some(true) {
        return Ok(None);
    }
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out: Vec<String> = Vec::with_capacity(lines.len() + 2);
    let top = lines
        .iter()
        .position(|l| l.starts_with("docker:") || l.starts_with("\"docker\":"));
    match top {
        None => {
            out.extend(lines.iter().map(|l| l.to_string()));
            out.push("docker:".into());
            out.push("  live-restore: true".into());
        }
        Some(at) => {
            let rest = lines[at].split_once(':').map_or("", |(_, r)| r);
            let value = rest.split(" #").next().unwrap_or("").trim();
            out.extend(lines[..at].iter().map(|l| l.to_string()));
            if value == "{}" || value.is_empty() {
                // a block map (or an empty one): its entries are the indented lines after
                let block_end = lines[at + 1..]
                    .iter()
                    .position(|l| {
                        !l.trim().is_empty() && !l.starts_with(' ') && !l.starts_with('#')
                    })
                    .map_or(lines.len(), |p| at + 1 + p);
                let block = &lines[at + 1..block_end];
                let indent = block
                    .iter()
                    .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                    .map_or(2, |l| l.len() - l.trim_start().len());
                out.push("docker:".into());
                let mut replaced = false;
                for l in block {
                    let key = l.trim_start();
                    if l.len() - key.len() == indent && key.starts_with("live-restore:") {
                        out.push(format!("{}live-restore: true", " ".repeat(indent)));
                        replaced = true;
                    } else {
                        out.push(l.to_string());
                    }
                }
                if !replaced {
                    out.insert(at + 1, format!("{}live-restore: true", " ".repeat(indent)));
                }
                out.extend(lines[block_end..].iter().map(|l| l.to_string()));
            } else if let Some(inner) = value.strip_prefix('{') {
                // a flow map: the setting goes first (a later key of the same name would
                // win, so refuse one that is there)
                if value.contains("live-restore") {
                    return Err("its `docker:` map sets live-restore already".into());
                }
                out.push(format!(
                    "docker: {{live-restore: true, {}",
                    inner.trim_start()
                ));
                out.extend(lines[at + 1..].iter().map(|l| l.to_string()));
            } else {
                return Err("its `docker:` is not a map".into());
            }
        }
    }
    let text = out.join("\n") + "\n";
    match parsed(&text)? {
        Some(true) => Ok(Some(text)),
        _ => Err("the edit did not read back as `docker: live-restore: true`".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colima_yaml_gets_live_restore_and_keeps_the_rest() {
        let fresh = "# Number of CPUs to be allocated to the virtual machine.\ncpu: 4\n\n# Docker daemon configuration\ndocker: {}\n\nmemory: 8\n";
        let got = colima_with_live_restore(fresh).unwrap().unwrap();
        assert_eq!(
            got,
            "# Number of CPUs to be allocated to the virtual machine.\ncpu: 4\n\n# Docker daemon configuration\ndocker:\n  live-restore: true\n\nmemory: 8\n"
        );
        assert_eq!(colima_with_live_restore(&got).unwrap(), None);

        let block = "docker:\n    insecure-registries:\n      - 10.0.0.1:5000\n    live-restore: false\nmemory: 8\n";
        assert_eq!(
            colima_with_live_restore(block).unwrap().unwrap(),
            "docker:\n    insecure-registries:\n      - 10.0.0.1:5000\n    live-restore: true\nmemory: 8\n"
        );
        let block = "docker:\n  debug: true\n";
        assert_eq!(
            colima_with_live_restore(block).unwrap().unwrap(),
            "docker:\n  live-restore: true\n  debug: true\n"
        );
        let flow = "docker: {debug: true}\n";
        assert_eq!(
            colima_with_live_restore(flow).unwrap().unwrap(),
            "docker: {live-restore: true, debug: true}\n"
        );
        assert_eq!(
            colima_with_live_restore("").unwrap().unwrap(),
            "docker:\n  live-restore: true\n"
        );
        assert_eq!(
            colima_with_live_restore("cpu: 2\n").unwrap().unwrap(),
            "cpu: 2\ndocker:\n  live-restore: true\n"
        );
        assert!(colima_with_live_restore("docker: [1]\n").is_err());
        assert!(colima_with_live_restore("cpu: [\n").is_err());
    }

    #[test]
    fn daemon_json_gets_live_restore_in_place() {
        assert_eq!(
            json_with_live_restore("").unwrap(),
            "{\n  \"live-restore\": true\n}\n"
        );
        assert_eq!(
            json_with_live_restore("{\"log-driver\": \"local\", \"live-restore\": false}").unwrap(),
            "{\n  \"log-driver\": \"local\",\n  \"live-restore\": true\n}\n"
        );
        assert_eq!(json_with_live_restore("[1]"), None);
        assert_eq!(json_with_live_restore("{oops"), None);
    }
}
