//! `homebase dash`: the daemon's dashboard in the browser, through an SSH forward that this
//! command keeps open until ctrl-c. The browser gets a one-time sign-in code in the URL
//! fragment (never sent to a server, never logged), exchanged there for a session id the
//! page keeps in its origin's `sessionStorage`; the token itself stays in this process.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use homebase_remote::{Forward, Session, Target, TunnelMaster};

use crate::cli::{DashArgs, Global};
use crate::exit::{Exit, coded};
use crate::project;

pub fn run(global: &Global, args: &DashArgs) -> Result<Exit> {
    let project = project::load(global)?;
    let link = project::Link::new(&project.config);
    let target = match &args.node {
        Some(name) => link.named_node(name)?,
        None => link.target(),
    };
    let session = Session::open(&target)?;
    let located = crate::daemon_client::locate(&session, global.daemon_dir.as_deref())
        .map_err(|e| coded(Exit::Unreachable, e.to_string()))?;
    let (remote_port, token) = (located.port, located.token);
    drop(session);

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
            .context("cannot install the ctrl-c handler")?;
    }
    let (local_port, master) = match target {
        Target::Local => (remote_port, None),
        Target::Ssh(t) => {
            let wanted = args.port.unwrap_or(remote_port);
            let local = if std::net::TcpListener::bind(("127.0.0.1", wanted)).is_ok() {
                wanted
            } else {
                std::net::TcpListener::bind(("127.0.0.1", 0))
                    .and_then(|l| l.local_addr())
                    .map(|a| a.port())
                    .context("no free local port")?
            };
            let fw = [Forward {
                local_port: local,
                remote_host: "127.0.0.1".into(),
                remote_port,
            }];
            let mut m = TunnelMaster::start(&t, &fw)?;
            if !m.wait_ready(&t, &stop) {
                return Err(t.explain_exit(&m.stderr()).into());
            }
            (local, Some((t, fw, m)))
        }
    };
    let url = format!("http://127.0.0.1:{local_port}/");
    // The browser gets a one-time code, never the token: a command line (the opener's) can
    // be read by other users of this machine, and a code is spent at the first sign-in.
    let needs_code = args.print_url || !args.no_browser;
    let with_token = if needs_code {
        format!(
            "{url}#login={}",
            crate::daemon_client::login_code(local_port, &token)?
        )
    } else {
        url.clone()
    };
    let opened = !args.no_browser && open_browser(&with_token);
    if args.json {
        let shown = if args.print_url { &with_token } else { &url };
        crate::say!(
            "{}",
            serde_json::to_string(&homebase_proto::DashOpened {
                url: shown.to_string(),
                local_port,
                browser_opened: opened,
            })
            .unwrap_or_default()
        );
        let _ = std::io::stdout().flush();
    } else if args.print_url {
        crate::say!("{with_token}");
    } else if opened {
        crate::esay!("dashboard opened at {url} (ctrl-c closes the tunnel)");
    } else if needs_code {
        crate::esay!(
            "dashboard at {url} (no browser could be opened here)\nopen {with_token} within 2 minutes to sign in (the code works once), or sign in with the token from {} on the host\n(ctrl-c closes the tunnel)",
            token_path()
        );
    } else {
        crate::esay!(
            "dashboard at {url}\nsign in with the token from {} on the host, or run `homebase dash --print-url` for a one-time sign-in URL\n(ctrl-c closes the tunnel)",
            token_path()
        );
    }
    // Keep the forward up until ctrl-c, reconnecting when it drops.
    let Some((t, fw, mut m)) = master else {
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
        }
        return Ok(Exit::Ok);
    };
    while !stop.load(Ordering::Relaxed) {
        if !m.running() {
            std::thread::sleep(Duration::from_secs(1));
            m = TunnelMaster::start(&t, &fw)?;
            m.wait_ready(&t, &stop);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(Exit::Ok)
}

fn open_browser(url: &str) -> bool {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
/// The daemon's token on the host, as a message names it.
fn token_path() -> String {
    homebase_proto::layout::shown(&[
        homebase_proto::layout::DAEMON,
        homebase_proto::layout::TOKEN,
    ])
}
