//! Tailscale on the host, where the user has it: the host's tailnet name offered as a way
//! from away (`host.also`), and a warning when Tailscale would not start before a login
//! after a power cut (the App Store app needs a login; the standalone `tailscaled`, a
//! system daemon, does not).

use anyhow::Result;
use homebase_remote::Session;

use super::{Item, item};

/// What the host says of Tailscale: the app installed, a system daemon set to start at
/// boot, and the host's own tailnet name (empty when Tailscale is not up).
#[derive(Debug, Default, PartialEq)]
pub(super) struct Tailscale {
    pub app: bool,
    pub daemon_at_boot: bool,
    /// The host account's name.
    pub user: String,
    pub name: String,
}

const FACTS: &str = r#"app=0; [ -d /Applications/Tailscale.app ] && app=1
boot=0; for f in /Library/LaunchDaemons/com.tailscale.tailscaled.plist /Library/LaunchDaemons/homebrew.mxcl.tailscale.plist; do [ -f "$f" ] && boot=1; done
command -v systemctl >/dev/null 2>&1 && systemctl is-enabled tailscaled >/dev/null 2>&1 && boot=1
ts=$(command -v tailscale 2>/dev/null || { [ -x /Applications/Tailscale.app/Contents/MacOS/Tailscale ] && echo /Applications/Tailscale.app/Contents/MacOS/Tailscale; })
name=; [ -n "$ts" ] && name=$("$ts" status --json 2>/dev/null | sed -n 's/.*"DNSName": *"\([^"]*\)".*/\1/p' | head -1)
echo "$app $boot $(id -un) ${name%.}""#;

pub(super) fn facts(session: &Session) -> Result<Tailscale> {
    let out = session.check(FACTS)?;
    Ok(parse(&out))
}

fn parse(out: &str) -> Tailscale {
    let mut w = out.split_whitespace();
    Tailscale {
        app: w.next() == Some("1"),
        daemon_at_boot: w.next() == Some("1"),
        user: w.next().unwrap_or_default().to_string(),
        name: w.next().unwrap_or_default().to_string(),
    }
}

/// The items: none when the host has no Tailscale.
pub(super) fn items(t: &Tailscale, ways: &[String]) -> Vec<Item> {
    let mut items = Vec::new();
    if t.app && !t.daemon_at_boot {
        items.push(item(
            "tailscale at boot",
            "warning",
            "the Tailscale app starts only after a login: after a power cut the host is off the tailnet until someone logs in",
            Some("use the standalone tailscaled instead: brew install tailscale && sudo brew services start tailscale (then quit the app)".into()),
        ));
    }
    if !t.name.is_empty() {
        let known = ways
            .iter()
            .any(|w| w.rsplit('@').next() == Some(t.name.as_str()));
        items.push(if known {
            item(
                "tailnet",
                "ok",
                format!(
                    "the host is on the tailnet as {}, one of the ways to it",
                    t.name
                ),
                None,
            )
        } else {
            item(
                "tailnet",
                "warning",
                format!(
                    "the host is on a tailnet as {}, which is not one of the ways to it",
                    t.name
                ),
                Some(format!(
                    "add to [host] in homebase.toml: also = [\"{}@{}\"]",
                    t.user, t.name
                )),
            )
        });
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_without_a_boot_daemon_is_flagged_and_the_tailnet_name_offered() {
        let t = parse("1 0 me mini.tail1234.ts.net\n");
        assert_eq!(
            t,
            Tailscale {
                app: true,
                daemon_at_boot: false,
                user: "me".into(),
                name: "mini.tail1234.ts.net".into(),
            }
        );
        let i = items(&t, &["me@mini.lan".into()]);
        assert_eq!(i[0].name, "tailscale at boot");
        assert!(
            i[0].fix
                .as_deref()
                .unwrap()
                .contains("brew services start tailscale")
        );
        assert_eq!(i[1].state, "warning");
        assert_eq!(
            i[1].fix.as_deref(),
            Some("add to [host] in homebase.toml: also = [\"me@mini.tail1234.ts.net\"]")
        );
        let t = parse("0 1 me mini.tail1234.ts.net");
        let i = items(&t, &["me@mini.tail1234.ts.net".into()]);
        assert_eq!(i.len(), 1);
        assert_eq!(i[0].state, "ok");
        assert!(items(&parse("0 0 me"), &[]).is_empty());
    }
}
