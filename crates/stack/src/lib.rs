//! homebase's stack model: Compose files, the homebase.toml that budgets them, the memory
//! plan, and the compose file that deploy uses.
//!
//! Invariant: this crate does no network or process I/O and never reads the process
//! environment; it reads only the local files it is pointed to (and the system's time zone
//! database, for `[spend]`), and takes variables as input.

pub mod cluster;
pub mod compose;
pub mod config;
pub mod dotenv;
pub mod error;
pub mod interpolate;
pub mod kinds;
pub mod loops;
pub mod model;
pub mod paths;
pub mod plan;
pub mod render;
pub mod spend;
pub mod swarm;
pub mod units;
pub mod validate;

pub use compose::{ComposeProject, LoadOptions};
pub use config::Config;
pub use error::StackError;
pub use plan::Plan;
pub use units::Bytes;
