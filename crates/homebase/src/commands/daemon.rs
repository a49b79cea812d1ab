//! `homebase daemon`: the host side. A tokio runtime around `homebase_daemon::run`, stopped
//! cleanly by SIGTERM or ctrl-c.

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

use crate::cli::DaemonArgs;
use crate::exit::Exit;

pub fn run(args: &DaemonArgs) -> Result<Exit> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HOMEBASE_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let home = match &args.home {
        Some(h) => h.clone(),
        None => std::env::var_os("HOME")
            .map(std::path::PathBuf::from)
            .map(|h| homebase_proto::layout::root(&h))
            .context("HOME is not set; pass --home")?,
    };
    let opts = homebase_daemon::Options {
        home,
        listen: args.listen,
        endpoint: args.engine.clone(),
        state_dir: args.state_dir.clone(),
        projects: args.projects.clone(),
        retention: homebase_daemon::store::Retention {
            raw: args.keep_raw_hours.max(1) * 3600,
            minute: args.keep_minute_days.max(1) * 86400,
            quarter: args.keep_quarter_days.max(1) * 86400,
            events: args.keep_quarter_days.max(1) * 86400,
        },
        exe: std::env::current_exe().ok(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // few, long-lived blocking threads: each new thread can grow another malloc arena
        .max_blocking_threads(4)
        .thread_keep_alive(std::time::Duration::from_secs(300))
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let ran = rt.block_on(async move {
        let cancel = CancellationToken::new();
        let stopper = cancel.clone();
        tokio::spawn(async move {
            let ctrl_c = tokio::signal::ctrl_c();
            #[cfg(unix)]
            {
                let mut term =
                    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    {
                        Ok(t) => t,
                        Err(_) => {
                            let _ = ctrl_c.await;
                            stopper.cancel();
                            return;
                        }
                    };
                tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
            }
            #[cfg(not(unix))]
            let _ = ctrl_c.await;
            stopper.cancel();
        });
        homebase_daemon::run(opts, cancel).await
    });
    // a blocking task still running (an alert's HTTP call) does not hold the stop
    rt.shutdown_timeout(std::time::Duration::from_millis(300));
    ran?;
    Ok(Exit::Ok)
}
