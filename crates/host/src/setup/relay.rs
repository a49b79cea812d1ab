//! `[host.relay]`: the host keeps a reverse tunnel to a relay, the way in from anywhere.
//! Setup gives the host a key of its own for the relay, the relay's host key as the laptop
//! knows it (so the host checks the relay against what the laptop checked), and the
//! settings the daemon's tunnel reads; then it proves the way works from the laptop.
//! Nothing goes on the relay but one line in its account's `authorized_keys`, which setup
//! prints, restricted to the one port.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use homebase_proto::layout;
use homebase_proto::relay::{RelaySettings, RelayState};
use homebase_remote::{Session, SshTarget, Target, sh_quote};

use super::Item;
use super::Options;
use crate::link::Link;
use crate::project::Project;

/// How long setup waits for the daemon to bring a new tunnel up.
const UP_WITHIN: Duration = Duration::from_secs(25);

/// Every relay item, appended to the host's checklist.
pub(super) fn make_it_so(
    items: &mut Vec<Item>,
    session: &Session,
    project: &Project,
    link: &Link,
    args: &Options,
) -> Result<()> {
    let (Some(section), Some(relay)) = (&project.config.host.relay, link.relay_target()) else {
        return Ok(());
    };
    let Some(resolved) = relay.resolve() else {
        items.push(Item::new(
            "relay",
            "missing",
            format!("ssh cannot make sense of `{}`", relay.destination),
            Some(format!(
                "check host.relay.ssh; `ssh -G {}` shows what OpenSSH makes of it",
                relay.destination
            )),
        ));
        return Ok(());
    };
    let Some(pubkey) = host_key(items, session, args)? else {
        return Ok(());
    };
    if !relay_host_key(items, session, &relay, &resolved, args)? {
        return Ok(());
    }
    let settings = RelaySettings {
        destination: match &resolved.user {
            Some(u) => format!("{u}@{}", resolved.hostname),
            None => resolved.hostname.clone(),
        },
        port: resolved.port,
        listen_port: section.tunnel_port,
        to_port: 22,
    };
    if !settings.plain_destination() {
        items.push(Item::new(
            "relay",
            "missing",
            format!(
                "ssh resolves the relay to `{}`, which is not `user@host`",
                settings.destination
            ),
            Some("set host.relay.ssh to the relay's user@host".into()),
        ));
        return Ok(());
    }
    if !relay_accepts(items, session, &settings, &pubkey, &relay)? {
        return Ok(());
    }
    write_settings(items, session, &settings, args)?;
    away_path(items, session, link, &relay)
}

/// The host's own key for the relay (made once, on the host: the private half never leaves
/// it); its public half, or `None` when it is missing and this is a check.
fn host_key(items: &mut Vec<Item>, session: &Session, args: &Options) -> Result<Option<String>> {
    let key = layout::sh_relay_file("id_ed25519");
    let read = session.run(&format!("cat {key}.pub 2>/dev/null"))?;
    let existing = String::from_utf8_lossy(&read.stdout).trim().to_string();
    if !existing.is_empty() {
        // it goes into a line the user pastes on the relay: one plain public key, or nothing
        let Some(key) = plain_public_key(&existing) else {
            items.push(not_plain());
            return Ok(None);
        };
        items.push(Item::new(
            "relay key",
            "ok",
            "the host has its key for the relay",
            None,
        ));
        return Ok(Some(key));
    }
    if args.check {
        items.push(Item::new(
            "relay key",
            "missing",
            "the host has no key for the relay yet",
            Some("homebase setup".into()),
        ));
        return Ok(None);
    }
    let made = session.check(&format!(
        "set -e; mkdir -p \"$(dirname {key})\"; ssh-keygen -q -t ed25519 -N '' -C \"homebase@$(hostname | tr -cd 'A-Za-z0-9._-')\" -f {key} </dev/null >/dev/null; cat {key}.pub"
    ))?;
    let Some(key) = plain_public_key(made.trim()) else {
        items.push(not_plain());
        return Ok(None);
    };
    items.push(Item::new(
        "relay key",
        "changed",
        "made the host's key for the relay (it never leaves the host)",
        None,
    ));
    Ok(Some(key))
}

fn not_plain() -> Item {
    let key = layout::shown(&[layout::RELAY_DIR, "id_ed25519"]);
    Item::new(
        "relay key",
        "missing",
        format!("the host's relay key ({key}.pub) is not one plain ed25519 public key"),
        Some(format!(
            "remove {key} and id_ed25519.pub on the host; homebase setup then makes a new one"
        )),
    )
}

/// `ssh-ed25519 BASE64 [comment]` on one line, the comment plain words: what may go into
/// the relay's authorized_keys (anything else could carry options or a second line).
fn plain_public_key(text: &str) -> Option<String> {
    let mut words = text.split(' ');
    let (kind, body) = (words.next()?, words.next()?);
    let plain = kind == "ssh-ed25519"
        && !body.is_empty()
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c))
        && words.all(|w| {
            w.chars()
                .all(|c| c.is_ascii_alphanumeric() || "@._-".contains(c))
        });
    plain.then(|| text.to_string())
}

/// The relay's host key as the laptop has it recorded, written on the host under
/// `homebase-relay`: the host checks the relay against the key the laptop checked. False
/// when the laptop has none (nothing to trust yet).
fn relay_host_key(
    items: &mut Vec<Item>,
    session: &Session,
    relay: &SshTarget,
    resolved: &homebase_remote::Resolved,
    args: &Options,
) -> Result<bool> {
    let entry = resolved.known_hosts_entry();
    let mut keys: Vec<String> = Vec::new();
    let files: Vec<String> = match &relay.known_hosts_file {
        Some(f) => vec![f.display().to_string()],
        None => resolved.known_hosts.clone(),
    };
    for f in files {
        let path = homebase_proto::sys::expand_home(std::path::Path::new(&f));
        let out = std::process::Command::new("ssh-keygen")
            .arg("-F")
            .arg(&entry)
            .arg("-f")
            .arg(&path)
            .output()
            .with_context(|| format!("cannot run ssh-keygen -F {entry} -f {}", path.display()))?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if line.starts_with('#') || line.starts_with('@') {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            if let [_, kind, key, ..] = words.as_slice() {
                keys.push(format!("{} {kind} {key}", layout::RELAY_KEY_ALIAS));
            }
        }
    }
    if keys.is_empty() {
        items.push(Item::new(
            "relay host key",
            "missing",
            format!("this laptop has no recorded host key for the relay `{entry}`"),
            Some(format!(
                "connect once with `ssh {}`, check the fingerprint it shows, accept it, then run homebase setup again",
                relay.destination
            )),
        ));
        return Ok(false);
    }
    keys.sort();
    keys.dedup();
    let text = keys.join("\n") + "\n";
    let file = layout::sh_relay_file("known_hosts");
    let current = session.run(&format!("cat {file} 2>/dev/null"))?;
    if current.stdout == text.as_bytes() {
        items.push(Item::new(
            "relay host key",
            "ok",
            "the host checks the relay against the key this laptop recorded",
            None,
        ));
    } else if args.check {
        items.push(Item::new(
            "relay host key",
            "missing",
            "the host does not have the relay's key as this laptop recorded it",
            Some("homebase setup".into()),
        ));
        return Ok(false);
    } else {
        session.check_with_input(
            &format!("set -e; mkdir -p \"$(dirname {file})\"; cat > {file}"),
            text.as_bytes(),
        )?;
        items.push(Item::new(
            "relay host key",
            "changed",
            "gave the host the relay's key as this laptop recorded it",
            None,
        ));
    }
    Ok(true)
}

/// Whether the relay lets the host in with its key; when not, the line to add there.
fn relay_accepts(
    items: &mut Vec<Item>,
    session: &Session,
    s: &RelaySettings,
    pubkey: &str,
    relay: &SshTarget,
) -> Result<bool> {
    let out = session.run(&format!(
        "ssh -F /dev/null -i {key} -o IdentitiesOnly=yes -o UserKnownHostsFile={kh} -o HostKeyAlias={alias} -o BatchMode=yes -o StrictHostKeyChecking=yes -o ConnectTimeout=10 -p {port} {dest} true 2>&1 || exit 3",
        key = layout::sh_relay_file("id_ed25519"),
        kh = layout::sh_relay_file("known_hosts"),
        alias = layout::RELAY_KEY_ALIAS,
        port = s.port,
        dest = sh_quote(&s.destination),
    ))?;
    if out.status.success() {
        items.push(Item::new(
            "relay account",
            "ok",
            format!("the relay {} lets the host in with its key", s.destination),
            None,
        ));
        return Ok(true);
    }
    let said = String::from_utf8_lossy(&out.stdout);
    let said = said
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let line = format!(
        "restrict,port-forwarding,permitlisten=\"127.0.0.1:{}\" {pubkey}",
        s.listen_port
    );
    let (detail, fix) = if said.contains("Permission denied") {
        (
            format!(
                "the relay {} does not take the host's key yet",
                s.destination
            ),
            format!(
                "add this line to ~/.ssh/authorized_keys of that account on the relay (`ssh {} 'cat >> ~/.ssh/authorized_keys'` and paste it), then run homebase setup again:\n{line}",
                relay.destination
            ),
        )
    } else if said.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || said.contains("verification failed")
    {
        (
            format!("the relay {} offers the host another key than this laptop recorded", s.destination),
            "check the relay's key from here (`ssh-keygen -F` / the relay's console); if it changed for a known reason, update this laptop's known_hosts and run homebase setup again".to_string(),
        )
    } else {
        (
            format!("the host cannot reach the relay {}: {said}", s.destination),
            "the host needs outbound SSH to the relay: check its address, the relay's sshd and any firewall on the way".to_string(),
        )
    };
    items.push(Item::new("relay account", "missing", detail, Some(fix)));
    Ok(false)
}

/// The settings the daemon's tunnel reads.
fn write_settings(
    items: &mut Vec<Item>,
    session: &Session,
    s: &RelaySettings,
    args: &Options,
) -> Result<()> {
    let file = layout::sh_daemon_file(layout::RELAY_SETTINGS);
    let current = session.run(&format!("cat {file} 2>/dev/null"))?;
    let same = serde_json::from_slice::<RelaySettings>(&current.stdout)
        .ok()
        .as_ref()
        == Some(s);
    let what = format!(
        "the daemon keeps 127.0.0.1:{} on the relay {} leading to the host's sshd",
        s.listen_port, s.destination
    );
    if same {
        items.push(Item::new("relay tunnel", "ok", what, None));
    } else if args.check {
        items.push(Item::new(
            "relay tunnel",
            "missing",
            "the daemon has not been told to keep the tunnel",
            Some("homebase setup".into()),
        ));
    } else {
        let text = serde_json::to_string_pretty(s)? + "\n";
        session.check_with_input(
            &format!("set -e; mkdir -p \"$(dirname {file})\"; t={file}.tmp.$$; cat > \"$t\"; mv \"$t\" {file}"),
            text.as_bytes(),
        )?;
        items.push(Item::new("relay tunnel", "changed", what, None));
    }
    Ok(())
}

/// The way through the relay, tried for real from this laptop (a connection of its own,
/// not the one setup runs on), waiting a little for a tunnel the daemon starts now.
fn away_path(
    items: &mut Vec<Item>,
    session: &Session,
    link: &Link,
    relay: &SshTarget,
) -> Result<()> {
    let Some(Target::Ssh(way)) = link.ways().last().cloned() else {
        return Ok(());
    };
    let mut way = way;
    way.persist = Duration::ZERO;
    let t0 = Instant::now();
    let mut last = String::new();
    while t0.elapsed() < UP_WITHIN {
        let started = Instant::now();
        match Session::open(&Target::Ssh(way.clone())).and_then(|s| s.check("true")) {
            Ok(_) => {
                items.push(Item::new(
                    "away path",
                    "ok",
                    format!(
                        "this laptop reaches the host through the relay {} ({} ms to connect)",
                        relay.destination,
                        started.elapsed().as_millis()
                    ),
                    None,
                ));
                return Ok(());
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let state = read_state(session);
    items.push(Item::new(
        "away path",
        "missing",
        format!(
            "the laptop cannot reach the host through the relay {}: {last}{}",
            relay.destination,
            state
                .filter(|s| !s.error.is_empty())
                .map(|s| format!(" (the host's tunnel is {}: {})", s.state, s.error))
                .unwrap_or_default()
        ),
        Some(format!(
            "the daemon keeps the tunnel: its log on the host ({}) says why",
            layout::shown(&[layout::DAEMON, layout::DAEMON_LOG])
        )),
    ));
    Ok(())
}

/// The tunnel's state as the daemon last wrote it.
pub fn read_state(session: &Session) -> Option<RelayState> {
    let out = session
        .run(&format!(
            "cat {} 2>/dev/null",
            layout::sh_daemon_file(layout::RELAY_STATE)
        ))
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

#[cfg(test)]
mod tests {
    use super::plain_public_key;

    #[test]
    fn only_a_plain_public_key_goes_into_the_relays_line() {
        let k = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMY8O8x/7gJlKFEBQqSVdkR5X4mn112KFDeS6vf7FFcy homebase@vm";
        assert_eq!(plain_public_key(k).as_deref(), Some(k));
        for bad in [
            "ssh-ed25519 AAAA x\ncommand=\"sh\" ssh-ed25519 BBBB",
            "command=\"sh\" ssh-ed25519 AAAA",
            "ssh-rsa AAAA",
            "ssh-ed25519 AAAA homebase@vm,permitopen=\"*:*\"",
            "ssh-ed25519",
        ] {
            assert_eq!(plain_public_key(bad), None, "{bad}");
        }
    }
}
