//! A release's files, uploaded as one archive into `releases/<id>` atomically.

use anyhow::{Context, Result};

use super::{HostProject, check_id};
use homebase_proto::clock::now_secs;

impl HostProject<'_> {
    /// Uploads a bundle atomically: into a temp dir, then renamed to `releases/<id>`.
    pub fn upload(&self, id: &str, files: &[(&str, &[u8])]) -> Result<()> {
        let bundle = self.bundle(id, files, &[])?;
        let (script, input) = bundle.script(bundle.small());
        self.session.check_with_input(&script, &input)?;
        Ok(())
    }

    /// Swarm mode: uploads release `id` with the objects of the project's files this node
    /// lacks (one round trip to learn them), then builds the release's images here, as the
    /// release job does in Compose mode; a failed build is an error with its log's tail.
    pub fn upload_and_build(
        &self,
        id: &str,
        files: &[(&str, &[u8])],
        source: &crate::source::Source,
    ) -> Result<()> {
        if source.builds.is_empty() {
            return self.upload(id, files);
        }
        let have: std::collections::HashSet<String> = self
            .session
            .check(&format!("ls {}/objects 2>/dev/null; true", self.dir()))?
            .lines()
            .map(str::to_string)
            .collect();
        let objects = crate::source::read_objects(&source.missing(&have))?;
        let bundle = self.bundle(id, files, &objects)?;
        let (upload, input) = bundle.script(bundle.small());
        let script = format!(
            "( {upload} ) || exit 1\n{prelude}{fns}j=\"$d/build.$$\"; mkdir -p \"$j\"; build_release {id}; rc=$?; rm -rf \"$j\"; exit $rc\n",
            prelude = format_args!(
                "d={}; p={}; compose={}; say() {{ printf '@@ %s\\n' \"$*\"; }}; quote() {{ sed 's/^/| /'; }}\n",
                self.dir(),
                homebase_remote::sh_quote(&self.project),
                super::FIND_COMPOSE
            ),
            fns = super::tree::JOB_FNS,
        );
        let out = self.session.run_with_deadline(
            &script,
            &input,
            homebase_remote::STEP_DEADLINE.max(std::time::Duration::from_secs(1800)),
        )?;
        if out.status.success() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let log: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("| "))
            .map(homebase_proto::text::printable)
            .collect();
        Err(crate::exit::coded(
            crate::exit::Exit::Refused,
            format!(
                "release {id} did not build on {}; nothing was changed{}\nthe build said:\n{}",
                self.session.host(),
                if log.is_empty() {
                    format!(" ({})", String::from_utf8_lossy(&out.stderr).trim())
                } else {
                    String::new()
                },
                log[log.len().saturating_sub(40)..].join("\n")
            ),
        ))
    }

    /// Release `id`'s files as a bundle to upload (see [`Bundle::script`]), with the
    /// objects of the project's files the host lacks (name, mode, content), which go to
    /// the project's `objects/`.
    pub fn bundle(
        &self,
        id: &str,
        files: &[(&str, &[u8])],
        objects: &[(String, u32, Vec<u8>)],
    ) -> Result<Bundle> {
        check_id(id)?;
        let mut archive = tar::Builder::new(Vec::new());
        for (name, mode, data) in objects {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(*mode);
            header.set_mtime(now_secs());
            header.set_cksum();
            archive
                .append_data(&mut header, format!("objects/{name}"), data.as_slice())
                .context("cannot build the release bundle")?;
        }
        for (name, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o600);
            header.set_mtime(now_secs());
            header.set_cksum();
            archive
                .append_data(&mut header, name, *data)
                .context("cannot build the release bundle")?;
        }
        let tar = archive
            .into_inner()
            .context("cannot build the release bundle")?;
        // gzip (level 6): source files shrink to a quarter or less, and a hotel uplink is slow
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &tar).context("cannot compress the release bundle")?;
        let bytes = gz.finish().context("cannot compress the release bundle")?;
        Ok(Bundle {
            dir: self.dir(),
            id: id.to_string(),
            bytes,
        })
    }
}

/// Bundles up to this size (the tar) may go base64-encoded in a command's own text.
const INLINE_BUNDLE: usize = 64 * 1024;

/// A release's files as a tar, to upload into `releases/<id>` atomically.
pub struct Bundle {
    dir: String,
    id: String,
    bytes: Vec<u8>,
}

impl Bundle {
    /// Small enough to go in a command's own text (Linux takes one argument of up to 128
    /// KiB): a command that reads its stdin waits one more round trip for it.
    pub fn small(&self) -> bool {
        self.bytes.len() <= INLINE_BUNDLE
    }

    /// The script that uploads it (exit 1 on any failure, nothing left but a temp dir), for
    /// a command that goes on after it, and what to send on that command's stdin: nothing
    /// when `inline` (the archive, base64, is in the script), else the archive.
    pub fn script(&self, inline: bool) -> (String, Vec<u8>) {
        let take = if inline {
            use base64::Engine as _;
            format!(
                "printf '%s' {} | {{ base64 -d 2>/dev/null || base64 -D; }} > \"$t.tar\"",
                base64::engine::general_purpose::STANDARD.encode(&self.bytes)
            )
        } else {
            "cat > \"$t.tar\"".to_string()
        };
        let script = format!(
            // every step chained with && (no `set -e`: it is off inside a list that is tested,
            // as when a command goes on after the upload), and the archive taken whole (its
            // size checked) before anything is unpacked: a cut link leaves only the temp dir
            "d={d}; t=\"$d/releases/.tmp-{id}\"; rm -rf \"$t\" && mkdir -p \"$t\" && chmod 700 \"$t\" && \
             {take} && [ \"$(wc -c < \"$t.tar\" | tr -d ' ')\" = {n} ] && tar -xpzf \"$t.tar\" -C \"$t\" && rm -f \"$t.tar\" && \
             {{ [ ! -d \"$t/objects\" ] || {{ mkdir -p \"$d/objects\" && chmod 700 \"$d/objects\" && \
               find \"$t/objects\" -type f -exec sh -c 'mv -f \"$@\" \"$0\"' \"$d/objects\" {{}} + && rm -rf \"$t/objects\"; }}; }} && \
             find \"$t\" -type f -exec chmod 600 {{}} + && rm -rf \"$d/releases/{id}\" && mv \"$t\" \"$d/releases/{id}\" || {{ rm -rf \"$t\" \"$t.tar\"; exit 1; }}",
            d = self.dir,
            id = self.id,
            n = self.bytes.len()
        );
        (
            script,
            if inline {
                Vec::new()
            } else {
                self.bytes.clone()
            },
        )
    }
}
