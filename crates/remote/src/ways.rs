//! Several ways to one host (the LAN name, a tailnet name, a relay): the first that answers
//! is taken. A warm connection on any way is used at once; otherwise the ways are raced,
//! each started a moment after the one before it (at once when that one failed), the way
//! that worked last time first, so that a way that hangs (a LAN name away from home) costs
//! nothing but that moment.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::master::{master_alive, shared_control_dir, shared_socket};
use crate::{RemoteError, Session, Target};

/// How long a way has before the next one is started beside it.
pub const HEAD_START: Duration = Duration::from_millis(300);

/// The first way that answers: its session and its index in `ways`.
pub fn open_first(ways: &[Target]) -> Result<(Session, usize), RemoteError> {
    match ways {
        [] => Err(RemoteError::Unreachable {
            host: "(no host)".into(),
            timeout_secs: 0,
            detail: "no way to the host is configured".into(),
        }),
        [only] => Ok((Session::open(only)?, 0)),
        _ => {
            let order = order(ways.len(), remembered(ways));
            if let Some(i) = order.iter().copied().find(|&i| warm(&ways[i])) {
                return Ok((Session::open(&ways[i])?, i));
            }
            let (session, i) = race(ways, &order)?;
            remember(ways, i);
            Ok((session, i))
        }
    }
}

/// Whether a shared connection of this way is open now (a local exchange, no network).
fn warm(t: &Target) -> bool {
    let Target::Ssh(t) = t else {
        return false;
    };
    !t.persist.is_zero() && shared_socket(t).is_some_and(|s| master_alive(t, &s))
}

/// The order the ways are tried in: the one remembered first, then the rest as written.
fn order(n: usize, first: Option<usize>) -> Vec<usize> {
    let mut o: Vec<usize> = first.filter(|&f| f < n).into_iter().collect();
    o.extend((0..n).filter(|i| Some(*i) != first));
    o
}

/// Starts the ways in `order`, each [`HEAD_START`] after the previous one or at once when
/// every way started so far failed; the first to connect wins. The others, should they
/// connect later, are closed.
fn race(ways: &[Target], order: &[usize]) -> Result<(Session, usize), RemoteError> {
    let (tx, rx) = mpsc::channel::<(usize, Result<Session, RemoteError>)>();
    let mut started = 0;
    let mut failed: Vec<(usize, RemoteError)> = Vec::new();
    let mut next_at = Instant::now();
    loop {
        if started < order.len() && Instant::now() >= next_at {
            let i = order[started];
            let (tx, way) = (tx.clone(), ways[i].clone());
            std::thread::spawn(move || {
                let _ = tx.send((i, Session::open(&way)));
            });
            started += 1;
            next_at = Instant::now() + HEAD_START;
        }
        let wait = if started < order.len() {
            next_at.saturating_duration_since(Instant::now())
        } else {
            Duration::from_secs(3600)
        };
        match rx.recv_timeout(wait) {
            Ok((i, Ok(session))) => {
                // the rest connect or fail on their own: a late winner is closed
                std::thread::spawn(move || {
                    while let Ok((_, r)) = rx.recv() {
                        if let Ok(s) = r {
                            s.close_shared();
                        }
                    }
                });
                return Ok((session, i));
            }
            Ok((i, Err(e))) => {
                failed.push((i, e));
                if failed.len() == order.len() {
                    return Err(all_failed(ways, failed));
                }
                if failed.len() == started {
                    next_at = Instant::now();
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(all_failed(ways, failed));
            }
        }
    }
}

/// Every way failed: a refused or unknown key first (never hidden behind another way's
/// timeout), else one "cannot reach" that names what each way said.
fn all_failed(ways: &[Target], mut failed: Vec<(usize, RemoteError)>) -> RemoteError {
    failed.sort_by_key(|(i, _)| *i);
    if let Some(pos) = failed.iter().position(|(_, e)| {
        matches!(
            e,
            RemoteError::HostKeyChanged { .. }
                | RemoteError::HostKeyUnknown { .. }
                | RemoteError::AuthFailed { .. }
        )
    }) {
        return failed.swap_remove(pos).1;
    }
    let timeout_secs = failed
        .iter()
        .find_map(|(_, e)| match e {
            RemoteError::Unreachable { timeout_secs, .. } => Some(*timeout_secs),
            _ => None,
        })
        .unwrap_or(0);
    let detail = failed
        .iter()
        .map(|(i, e)| format!("{}: {e}", describe(&ways[*i])))
        .collect::<Vec<_>>()
        .join("; ");
    RemoteError::Unreachable {
        host: ways.first().map(describe).unwrap_or_default(),
        timeout_secs,
        detail: format!("no way answered ({detail})"),
    }
}

fn describe(t: &Target) -> String {
    match t {
        Target::Ssh(s) => s.describe(),
        Target::Local => "local".into(),
    }
}

/// Where the way that worked last is kept: beside the shared connections, by the first
/// way's socket name.
fn memo(ways: &[Target]) -> Option<PathBuf> {
    let Some(Target::Ssh(first)) = ways.first() else {
        return None;
    };
    let socket = shared_socket(first)?;
    shared_control_dir()?;
    Some(socket.with_extension("way"))
}

fn remembered(ways: &[Target]) -> Option<usize> {
    std::fs::read_to_string(memo(ways)?).ok()?.trim().parse().ok()
}

fn remember(ways: &[Target], i: usize) {
    if let Some(p) = memo(ways) {
        let _ = std::fs::write(p, i.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SshTarget;

    #[test]
    fn the_remembered_way_goes_first_and_the_rest_keep_their_order() {
        assert_eq!(order(3, None), vec![0, 1, 2]);
        assert_eq!(order(3, Some(2)), vec![2, 0, 1]);
        assert_eq!(order(3, Some(7)), vec![0, 1, 2]);
    }

    #[test]
    fn a_key_problem_on_any_way_is_never_hidden_by_another_ways_timeout() {
        let ways: Vec<Target> = vec![
            SshTarget::new("me@mini.lan").into(),
            SshTarget::new("me@mini").into(),
        ];
        let e = all_failed(
            &ways,
            vec![
                (
                    0,
                    RemoteError::Unreachable {
                        host: "mini.lan".into(),
                        timeout_secs: 10,
                        detail: "timed out".into(),
                    },
                ),
                (
                    1,
                    RemoteError::HostKeyChanged {
                        host: "mini.lan".into(),
                        fingerprint: None,
                        remove: "ssh-keygen -R mini.lan".into(),
                    },
                ),
            ],
        );
        assert!(matches!(e, RemoteError::HostKeyChanged { .. }), "{e}");
        let e = all_failed(
            &ways,
            vec![(
                1,
                RemoteError::Unreachable {
                    host: "x".into(),
                    timeout_secs: 5,
                    detail: "refused".into(),
                },
            )],
        );
        assert!(e.to_string().contains("no way answered"), "{e}");
    }

    #[test]
    fn a_proxy_command_carries_every_option_of_the_relay() {
        let mut r = SshTarget::new("me@relay");
        r.identity_file = Some("/k/my key%1".into());
        let c = r.proxy_command();
        assert!(c.starts_with("ssh "), "{c}");
        assert!(c.ends_with(" -W %h:%p me@relay"), "{c}");
        assert!(c.contains("'/k/my key%%1'"), "{c}");
        assert!(c.contains("StrictHostKeyChecking=yes"), "{c}");
    }
}
