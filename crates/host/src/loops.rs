//! An agent loop's work brought back: the bundle of its branch, made on the host in a
//! sealed container of homebase's git image.

use anyhow::Result;
use homebase_proto::layout;
use homebase_remote::{Session, sh_quote};

use crate::exit::{Exit, coded};
use crate::project::Project;

/// The bundle of the loop's branch since the deployed commit, made on the host in a sealed
/// container of homebase's git image (never the loop's) with the workspace read-only;
/// `None` when the branch has nothing new.
pub fn fetch_bundle(session: &Session, project: &Project, name: &str) -> Result<Option<Vec<u8>>> {
    let d = layout::sh_project(&sh_quote(&project.config.project.name));
    // as the workspace's owner (numeric: the helper image knows no user of the loop's)
    let user = "\"$(ls -nd \"$ws\" | awk '{print $3\":\"$4}')\"";
    let env: String = layout::GIT_ENV
        .iter()
        .map(|e| format!("-e {} ", sh_quote(e)))
        .collect();
    let inner = format!(
        "{}g bundle create - refs/heads/homebase/{name} ${{1:+^$1}} 2>/tmp/hb.err || {{ grep -q 'empty bundle' /tmp/hb.err && exit 7; cat /tmp/hb.err >&2; exit 5; }}",
        layout::GIT_FN
    );
    let script = format!(
        "d={d}; ws=\"$d/{loops}/{name}/workspace\"; [ -d \"$ws/.git\" ] || {{ echo \"loop {name} has no workspace on this host yet; deploy first\" >&2; exit 6; }}; \
         base=$(cat \"$d/repo.git/refs/heads/deployed\" 2>/dev/null); \
         docker image inspect {img} >/dev/null 2>&1 || {{ echo \"homebase's git helper image {img} is not on this host; deploy builds it\" >&2; exit 6; }}; \
         exec docker run --rm --network none --cap-drop ALL --security-opt no-new-privileges --pids-limit 64 --memory 256m --user {user} \
         {env}-v \"$ws\":/workspace:ro -w /workspace --entrypoint sh {img} -c {inner} sh \"$base\"",
        loops = layout::LOOPS,
        img = layout::GIT_HELPER_IMAGE,
        inner = sh_quote(&inner),
    );
    let out = session.run(&script)?;
    match out.status.code() {
        Some(0) => Ok(Some(out.stdout)),
        Some(7) => Ok(None),
        _ => Err(coded(
            Exit::Unreachable,
            format!(
                "could not read loop `{name}`'s branch on {}: {}",
                session.host(),
                homebase_proto::text::printable(String::from_utf8_lossy(&out.stderr).trim())
            ),
        )),
    }
}
