//! The API's accept loop. `axum::serve` has no header timeout and no connection cap: with
//! launchd's 256 open files, a few hundred half-sent requests once left the monitor unable
//! to reach the engine. Here every connection must send its request head within
//! [`HEADER_TIMEOUT`] (between keep-alive requests too), at most [`MAX_CONNECTIONS`] are
//! open at once (the rest wait in the kernel's backlog, costing the daemon no descriptor),
//! and at shutdown each open connection gets [`SHUTDOWN_GRACE`] to finish.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// A request head (and the wait for the next one on a kept-alive connection) must arrive
/// within this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; the dashboard needs one or two, the CLI one per command.
pub const MAX_CONNECTIONS: usize = 128;
/// What an open connection (a live stream among them) gets to finish at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// Serves `router` on `listener` until `cancel`.
pub async fn serve(listener: TcpListener, router: Router, cancel: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = cancel.cancelled() => return,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // out of descriptors or a connection reset before accept: wait, go on
                    tracing::warn!("the API cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = cancel.cancelled() => return,
        };
        let service = TowerToHyperService::new(router.clone());
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
                }
            }
        });
    }
}

/// Raises this process's soft limit of open files to [`homebase_proto::sys::NOFILE`] (or
/// the hard limit, if lower); returns the limit now in force.
pub fn raise_open_files() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    let want = homebase_proto::sys::NOFILE.min(lim.maximum.unwrap_or(u64::MAX));
    if lim.current.is_some_and(|c| c < want) {
        lim.current = Some(want);
        if let Err(e) = setrlimit(Resource::Nofile, lim) {
            tracing::warn!("cannot raise the open-file limit to {want}: {e}");
        }
    }
    getrlimit(Resource::Nofile).current
}
