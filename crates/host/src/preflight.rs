//! What `homebase preflight` reads on the host beyond setup's facts, in one round trip: the
//! last backup's files checked against their manifest's checksums, the free space in the
//! host's home and the size of the images a rebuild would take again.

use anyhow::{Context, Result, bail};
use homebase_proto::BackupManifest;
use homebase_proto::layout;
use homebase_remote::{Session, sh_quote};

use crate::HostProject;
use crate::project::Project;

/// The answer, read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reads {
    /// The last backup's files whose checksum differs or that are gone (`None`: no backup
    /// was given to check).
    pub damaged: Option<Vec<String>>,
    /// Free bytes in the host's home, when `df` answered.
    pub free: Option<u64>,
    /// The images' sizes added up (the first 50 images).
    pub images: u64,
}

/// Reads the host: `last` is the backup whose files are checked.
pub fn read(session: &Session, project: &Project, last: Option<&BackupManifest>) -> Result<Reads> {
    let dir = format!(
        "{}/{}",
        HostProject::of(session, project).dir(),
        layout::BACKUPS
    );
    let answer = session
        .check(&script(&dir, last))
        .context("cannot check the last backup and the free space on the host")?;
    parse(&answer, last)
}

const CHECKED: &str = "checked";

fn script(backups: &str, last: Option<&BackupManifest>) -> String {
    let mut s = String::new();
    if let Some(m) = last {
        let dir = format!("{backups}/{}", sh_quote(&m.id));
        for (i, f) in m.files.iter().enumerate() {
            s.push_str(&format!(
                "s=$( (sha256sum {dir}/{file} || shasum -a 256 {dir}/{file}) 2>/dev/null | cut -d' ' -f1); [ \"$s\" = {sum} ] || echo damaged={i}\n",
                file = sh_quote(&f.file),
                sum = sh_quote(&f.sha256)
            ));
        }
        s.push_str(&format!("echo {CHECKED}\n"));
    }
    s.push_str("echo \"free_k=$(df -Pk \"$HOME\" | awk 'NR==2 {print $4}')\"\n");
    s.push_str("docker image ls --format 'image={{.Size}}' 2>/dev/null | head -50\ntrue\n");
    s
}

fn parse(answer: &str, last: Option<&BackupManifest>) -> Result<Reads> {
    let mut reads = Reads::default();
    let mut damaged = Vec::new();
    let mut checked = false;
    for line in answer.lines().map(str::trim) {
        if let Some(i) = line.strip_prefix("damaged=") {
            let file = i
                .parse::<usize>()
                .ok()
                .and_then(|i| last?.files.get(i))
                .context("the host named a backup file the manifest does not list")?;
            damaged.push(file.file.clone());
        } else if line == CHECKED {
            checked = true;
        } else if let Some(k) = line.strip_prefix("free_k=") {
            reads.free = k.parse::<u64>().ok().map(|k| k * 1024);
        } else if let Some(size) = line.strip_prefix("image=") {
            reads.images += homebase_stack::Bytes::parse(size).map_or(0, |b| b.0);
        }
    }
    if last.is_some() {
        if !checked {
            bail!("the host's answer ended before the backup's checksums were all checked");
        }
        reads.damaged = Some(damaged);
    }
    Ok(reads)
}

#[cfg(test)]
mod tests {
    use super::{parse, script};
    use homebase_proto::{BackupFile, BackupManifest};

    fn manifest() -> BackupManifest {
        let file = |name: &str| BackupFile {
            file: name.into(),
            sha256: "ab".repeat(32),
            bytes: 10,
            service: "db".into(),
            kind: "pg_dump".into(),
            path: None,
            node: None,
        };
        BackupManifest {
            id: "20261201-030000".into(),
            project: "p".into(),
            time: 0,
            files: vec![file("db.sql.gz"), file("graph.tar.gz")],
        }
    }

    #[test]
    fn a_damaged_file_is_named_from_the_manifest_and_the_room_is_added_up() {
        let m = manifest();
        let s = script("~/.homebase/p/backups", Some(&m));
        assert!(s.contains("backups/20261201-030000/graph.tar.gz"), "{s}");
        // recorded from a Mac: one file changed, BSD df, sizes as docker prints them
        let answer = "damaged=1\nchecked\nfree_k=104857600\nimage=1GB\nimage=512MB\nimage=oops\n";
        let r = parse(answer, Some(&m)).unwrap();
        assert_eq!(r.damaged, Some(vec!["graph.tar.gz".to_string()]));
        assert_eq!(r.free, Some(100 << 30));
        assert_eq!(r.images, (1 << 30) + (512 << 20)); // Docker's units, binary as Compose's
        let clean = parse("checked\nfree_k=\n", Some(&m)).unwrap();
        assert_eq!((clean.damaged, clean.free), (Some(vec![]), None));
    }

    #[test]
    fn a_cut_answer_or_a_file_the_manifest_lacks_is_an_error() {
        let m = manifest();
        assert!(parse("damaged=0\n", Some(&m)).is_err());
        assert!(parse("damaged=7\nchecked\n", Some(&m)).is_err());
        assert!(parse("damaged=x\nchecked\n", Some(&m)).is_err());
        // no backup to check: only the room
        let r = parse("free_k=2048\n", None).unwrap();
        assert_eq!((r.damaged, r.free), (None, Some(2 << 20)));
        assert!(!script("d", None).contains("sha256sum"));
    }
}
