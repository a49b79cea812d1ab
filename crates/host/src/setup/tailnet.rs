//! Tailscale on the host, where the user has it: the host's tailnet name offered as a way
//! from away (`host.also`), and a warning when Tailscale would not start before a login
//! after a power cut (the App Store app needs a login; the standalone `tailscaled`, a
//! system daemon, does not).

use super::Item;

pub(super) use crate::facts::Tailscale;

/// The items: none when the host has no Tailscale.
pub(super) fn items(t: &Tailscale, user: &str, ways: &[String]) -> Vec<Item> {
    let mut items = Vec::new();
    if t.app && !t.daemon_at_boot {
        items.push(Item::new(
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
            Item::new(
                "tailnet",
                "ok",
                format!(
                    "the host is on the tailnet as {}, one of the ways to it",
                    t.name
                ),
                None,
            )
        } else {
            Item::new(
                "tailnet",
                "warning",
                format!(
                    "the host is on a tailnet as {}, which is not one of the ways to it",
                    t.name
                ),
                Some(format!(
                    "add to [host] in homebase.toml: also = [\"{}@{}\"]",
                    user, t.name
                )),
            )
        });
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(app: bool, daemon_at_boot: bool, name: &str) -> Tailscale {
        Tailscale {
            app,
            daemon_at_boot,
            name: name.into(),
        }
    }

    #[test]
    fn the_app_without_a_boot_daemon_is_flagged_and_the_tailnet_name_offered() {
        let i = items(
            &ts(true, false, "mini.tail1234.ts.net"),
            "me",
            &["me@mini.lan".into()],
        );
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
        let t = ts(false, true, "mini.tail1234.ts.net");
        let i = items(&t, "me", &["me@mini.tail1234.ts.net".into()]);
        assert_eq!(i.len(), 1);
        assert_eq!(i[0].state, "ok");
        assert!(items(&ts(false, false, ""), "me", &[]).is_empty());
    }
}
