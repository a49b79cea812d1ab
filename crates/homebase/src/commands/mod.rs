//! One module per subcommand (`ops` holds the small ones about the running stack: logs,
//! exec, restart).

pub mod backup;
pub mod daemon;
pub mod dash;
pub mod deploy;
pub mod init;
pub mod loops;
pub mod mcp;
pub mod ops;
pub mod plan;
pub mod render;
pub mod rollback;
pub mod setup;
pub mod status;
pub mod swarm;
pub mod tunnel;
