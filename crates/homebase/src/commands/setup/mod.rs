//! `homebase setup [--check]`: makes a bare host ready, idempotently, over SSH: checks the OS,
//! the Docker engine and Compose (with the install hint for that OS), on macOS Colima's memory
//! and sleep, creates homebase's directories, installs this very binary when the host's OS and
//! architecture match, installs the daemon as a service that starts at boot (systemd user unit
//! on Linux, launchd agent on macOS), and verifies the daemon answers. Running it again
//! changes nothing and says so.

use std::fmt::Write as _;

use anyhow::Result;

use crate::cli::{Global, SetupArgs};
use crate::exit::Exit;
use crate::host::setup::{self, Options};
use crate::project::{self, Link};
use crate::ui::{self, BAD, GOOD, WARN, paint};

pub mod away;

/// One item of the checklist (`homebase_proto::CheckItem`).
pub use homebase_proto::CheckItem as Item;

pub fn run(global: &Global, args: &SetupArgs) -> Result<Exit> {
    let project = project::load(global)?;
    let options = Options {
        check: args.check,
        binary: args.binary.clone(),
    };
    let (items, blocked) = setup::checklist(&project, &Link::new(&project.config), &options)?;
    finish(&items, args.json, blocked)
}

fn finish(items: &[Item], json: bool, blocked: bool) -> Result<Exit> {
    let changed = items.iter().any(|i| i.state == "changed");
    let missing = items.iter().any(|i| i.state == "missing");
    if json {
        ui::out(
            &(serde_json::to_string_pretty(&homebase_proto::Checklist {
                items: items.to_vec(),
                changed,
                ready: !missing && !blocked,
            })? + "\n"),
        )?;
    } else {
        let mut s = String::new();
        for i in items {
            let mark = match i.state.as_str() {
                "ok" => paint(GOOD, "✓"),
                "changed" => paint(GOOD, "+"),
                "warning" => paint(WARN, "!"),
                _ => paint(BAD, "✗"),
            };
            let _ = writeln!(s, "{mark} {:<18} {}", i.name, i.detail);
            if let Some(fix) = &i.fix {
                let _ = writeln!(s, "  {:<18} fix: {fix}", "");
            }
        }
        let _ = writeln!(
            s,
            "{}",
            if missing || blocked {
                "not ready"
            } else if changed {
                "ready (changes made)"
            } else {
                "ready: nothing to change"
            }
        );
        ui::out(&s)?;
    }
    if blocked || missing {
        if !json {
            ui::error("the host is not ready; each ✗ above says how to fix it");
        }
        return Ok(Exit::Refused);
    }
    Ok(Exit::Ok)
}
