//! Several ways to one host (the LAN name, a tailnet name, a relay): the first that answers
//! is taken. A warm connection on any way is used at once; otherwise the ways are raced,
//! each started a moment after the one before it (at once when that one failed), the way
//! that worked last time beside the first, so that a way that hangs (a LAN name away from
//! home) costs nothing; an earlier way that answers almost as fast is preferred.

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
            let remembered = remembered(ways);
            let order = order(ways.len(), remembered);
            // a warm connection: the remembered way's first
            let warm_first = remembered.into_iter().chain(order.iter().copied());
            if let Some(i) = warm_first
                .filter(|&i| i < ways.len())
                .find(|&i| warm(&ways[i]))
            {
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

/// The order the ways are started in: as written, except that the one that worked last
/// starts at once beside the first.
fn order(n: usize, first: Option<usize>) -> Vec<usize> {
    let mut o: Vec<usize> = (0..n.min(1)).collect();
    o.extend(first.filter(|&f| f < n && f > 0));
    o.extend((1..n).filter(|i| Some(*i) != first));
    o
}

/// Starts the ways in `order`, each [`HEAD_START`] after the previous one (the remembered
/// one with the first), or at once when every way started so far failed; the first to
/// connect wins, but an earlier way still trying gets [`GRACE`] to connect too and is then
/// taken (at home the LAN is used even when the relay was quicker once). The others,
/// should they connect later, are closed.
fn race(ways: &[Target], order: &[usize]) -> Result<(Session, usize), RemoteError> {
    let (tx, rx) = mpsc::channel::<(usize, Result<Session, RemoteError>)>();
    let together = if order.get(1).is_some_and(|&i| i > 1) {
        2
    } else {
        1
    };
    let mut started: Vec<usize> = Vec::new();
    let mut failed: Vec<(usize, RemoteError)> = Vec::new();
    let mut best: Option<(Session, usize)> = None;
    let mut decide_at: Option<Instant> = None;
    let mut next_at = Instant::now();
    loop {
        while started.len() < order.len() && Instant::now() >= next_at && best.is_none() {
            let i = order[started.len()];
            let (tx, way) = (tx.clone(), ways[i].clone());
            std::thread::spawn(move || {
                let _ = tx.send((i, Session::open(&way)));
            });
            started.push(i);
            if started.len() >= together {
                next_at = Instant::now() + HEAD_START;
            }
        }
        // decided: nothing earlier than the winner still trying, or its grace is over
        let decided = best.as_ref().is_some_and(|(_, b)| {
            let earlier_trying = started
                .iter()
                .any(|i| i < b && !failed.iter().any(|(f, _)| f == i));
            !earlier_trying || decide_at.is_some_and(|d| Instant::now() >= d)
        });
        if decided && let Some(won) = best.take() {
            close_late(rx);
            return Ok(won);
        }
        let wait = match (decide_at, started.len() < order.len()) {
            (Some(d), _) => d.saturating_duration_since(Instant::now()),
            (None, true) => next_at.saturating_duration_since(Instant::now()),
            (None, false) => Duration::from_secs(3600),
        };
        match rx.recv_timeout(wait) {
            Ok((i, Ok(session))) => match &best {
                Some((_, b)) if *b < i => session.close_shared(),
                _ => {
                    if let Some((old, _)) = best.replace((session, i)) {
                        old.close_shared();
                    }
                    decide_at.get_or_insert(Instant::now() + GRACE);
                }
            },
            Ok((i, Err(e))) => {
                failed.push((i, e));
                if failed.len() == order.len() {
                    return Err(all_failed(ways, failed));
                }
                if best.is_none() && failed.len() == started.len() {
                    next_at = Instant::now();
                }
            }
            // a timeout (this function keeps a sender: the channel never closes)
            Err(_) => {}
        }
    }
}

/// How long a way that connected waits for an earlier way still trying.
pub const GRACE: Duration = Duration::from_millis(200);

/// Closes, in the background, the connections of the ways that connect after the race.
fn close_late(rx: mpsc::Receiver<(usize, Result<Session, RemoteError>)>) {
    std::thread::spawn(move || {
        while let Ok((_, r)) = rx.recv() {
            if let Ok(s) = r {
                s.close_shared();
            }
        }
    });
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
    std::fs::read_to_string(memo(ways)?)
        .ok()?
        .trim()
        .parse()
        .ok()
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
    fn the_remembered_way_starts_beside_the_first_and_the_rest_keep_their_order() {
        assert_eq!(order(3, None), vec![0, 1, 2]);
        assert_eq!(order(3, Some(2)), vec![0, 2, 1]);
        assert_eq!(order(3, Some(0)), vec![0, 1, 2]);
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
