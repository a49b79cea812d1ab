//! The project as the CLI's global flags find it; loading and planning are
//! `homebase_host::project`.

use anyhow::Result;

pub use homebase_host::link::{Link, way_words};
pub use homebase_host::project::{Project, process_env};

use crate::cli::Global;

fn load_args(global: &Global) -> homebase_host::project::LoadArgs {
    homebase_host::project::LoadArgs {
        config: global.config.clone(),
        directory: global.directory.clone(),
        env_files: global.env_files.clone(),
        profiles: global.profiles.clone(),
    }
}

/// homebase.toml from `--config`, else the nearest one from the start directory upwards,
/// loaded with its compose files.
pub fn load(global: &Global) -> Result<Project> {
    homebase_host::project::load(&load_args(global))
}

/// Where the search for homebase.toml starts: `--directory`, else the current directory.
pub fn start_dir(global: &Global) -> Result<std::path::PathBuf> {
    homebase_host::project::start_dir(&load_args(global))
}
