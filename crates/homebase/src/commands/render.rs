//! `homebase render`: the exact compose file deploy uses.

use anyhow::{Context, Result};

use crate::cli::{Global, RenderArgs};
use crate::exit::Exit;
use crate::project;
use crate::ui;

pub fn run(global: &Global, args: &RenderArgs) -> Result<Exit> {
    let project = project::load(global)?;
    let plan = project.plan_that_fits(
        &project::Link::new(&project.config),
        args.host_memory.as_deref(),
        "the stack does not fit its budget; `homebase plan` shows why",
    )?;
    let rendered = project.render(&plan)?;
    for n in &rendered.notes {
        crate::esay!("{}: {}", n.service, n.message);
    }
    match &args.output {
        Some(path) => std::fs::write(path, &rendered.yaml)
            .with_context(|| format!("cannot write `{}`", path.display()))?,
        None => ui::out(&rendered.yaml)?,
    }
    Ok(Exit::Ok)
}
