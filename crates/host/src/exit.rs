//! Exit codes, one meaning each, and how an error maps to one.

use std::process::ExitCode;

use homebase_stack::StackError;
use homebase_stack::config::ConfigError;
use homebase_stack::plan::PlanError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    /// The command ran and its answer is no: over budget, unhealthy, rolled back.
    Refused = 1,
    /// Bad input: flags, homebase.toml, compose files.
    BadInput = 2,
    /// The host, SSH or the Docker engine could not be reached or failed.
    Unreachable = 3,
    /// Another deploy holds the lock.
    Locked = 4,
    /// Interrupted (Ctrl-C, SIGTERM) before the host changed, or detached from a deploy that
    /// goes on on the host.
    Interrupted = 130,
}

impl Exit {
    pub fn code(self) -> i32 {
        self as i32
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// An error whose exit code is already decided.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Coded {
    pub exit: Exit,
    pub message: String,
}

pub fn coded(exit: Exit, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Coded {
        exit,
        message: message.into(),
    })
}

pub fn classify(err: &anyhow::Error) -> Exit {
    for cause in err.chain() {
        if let Some(c) = cause.downcast_ref::<Coded>() {
            return c.exit;
        }
        if let Some(r) = cause.downcast_ref::<homebase_remote::RemoteError>() {
            return match r {
                r @ homebase_remote::RemoteError::Command { .. } if r.engine_unreachable() => {
                    Exit::Unreachable
                }
                homebase_remote::RemoteError::Command { .. } => Exit::Refused,
                _ => Exit::Unreachable,
            };
        }
        if cause.is::<StackError>() || cause.is::<ConfigError>() || cause.is::<PlanError>() {
            return Exit::BadInput;
        }
    }
    // Internal errors and I/O errors the user did not cause.
    Exit::Unreachable
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(stderr: &str) -> anyhow::Error {
        anyhow::Error::new(homebase_remote::RemoteError::Command {
            host: "mini".into(),
            command: "docker compose ps".into(),
            status: "exit status: 1".into(),
            stderr: stderr.into(),
        })
    }

    #[test]
    fn an_engine_that_does_not_answer_is_the_host_failing() {
        // the docker CLI's words, Linux socket and Colima's context
        for stderr in [
            "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?",
            "Cannot connect to the Docker daemon at unix:///Users/me/.colima/default/docker.sock. Is the docker daemon running?",
            "error during connect: Get \"http://%2Fvar%2Frun%2Fdocker.sock/v1.45/containers/json\": dial unix /var/run/docker.sock: connect: connection refused",
        ] {
            assert_eq!(classify(&failed(stderr)), Exit::Unreachable, "{stderr}");
        }
        // a command that ran and said no
        assert_eq!(classify(&failed("no such service: ghost")), Exit::Refused);
        assert_eq!(
            classify(&failed("").context("cannot read the release")),
            Exit::Refused
        );
    }
}
