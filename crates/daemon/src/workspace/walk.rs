//! Reads inside a directory the agent writes, resolved one component at a time with
//! `O_NOFOLLOW`: a symlink anywhere on the way (a directory swapped for a link to
//! `~/.homebase/daemon`, a link in place of `HEAD`) ends the read instead of leaving the
//! directory. Only the root itself, which homebase configured, is opened by its path.

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, CWD, Dir, FileType, Mode, OFlags};

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// The root directory (its own path may contain links: homebase chose it).
pub fn open_root(root: &Path) -> Option<OwnedFd> {
    rustix::fs::openat(
        CWD,
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()
}

/// The components of a relative path, `None` when one is empty, `.` or `..`.
fn components(rel: &str) -> Option<Vec<&str>> {
    let parts: Vec<&str> = rel.split('/').collect();
    let ok = !rel.starts_with('/')
        && parts
            .iter()
            .all(|p| !p.is_empty() && *p != "." && *p != "..");
    ok.then_some(parts)
}

/// Opens the directory `rel` under `root`, refusing a symlink at any component.
pub fn open_dir(root: &OwnedFd, rel: &str) -> Option<OwnedFd> {
    let mut fd = rustix::io::dup(root).ok()?;
    if rel.is_empty() {
        return Some(fd);
    }
    for part in components(rel)? {
        fd = rustix::fs::openat(&fd, part, dir_flags(), Mode::empty()).ok()?;
    }
    Some(fd)
}

/// A regular file `rel` under `root` of at most `max` bytes, as text; `None` when a
/// component is a link, the file is not regular, larger, or not UTF-8.
pub fn read_small(root: &OwnedFd, rel: &str, max: u64) -> Option<String> {
    let (dir, name) = match rel.rsplit_once('/') {
        Some((d, n)) => (open_dir(root, d)?, n),
        None => (rustix::io::dup(root).ok()?, rel),
    };
    components(name)?;
    // NONBLOCK: a FIFO planted in place of the file must not hang the daemon
    let fd = rustix::fs::openat(
        &dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    )
    .ok()?;
    let st = rustix::fs::fstat(&fd).ok()?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile || size(&st) > max {
        return None;
    }
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(max)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

#[allow(clippy::unnecessary_cast)] // the field types differ between platforms
fn size(st: &rustix::fs::Stat) -> u64 {
    st.st_size as u64
}

#[allow(clippy::unnecessary_cast)]
fn mtime_ns(st: &rustix::fs::Stat) -> i64 {
    (st.st_mtime as i64)
        .saturating_mul(1_000_000_000)
        .saturating_add(st.st_mtime_nsec as i64)
}

/// What [`walk`] reports of one entry that is not a directory it descends into.
pub struct Entry {
    pub rel: String,
    pub size: u64,
    pub mtime_ns: i64,
}

/// Every entry under `root` but directories (a symlink is an entry of its own, never
/// followed), skipping directories named in `skip`; stops after `limit` entries.
pub fn walk(root: &OwnedFd, skip: &[&str], limit: usize, mut each: impl FnMut(Entry)) {
    let Ok(top) = rustix::io::dup(root) else {
        return;
    };
    let mut stack: Vec<(OwnedFd, String)> = vec![(top, String::new())];
    let mut count = 0usize;
    while let Some((dir, prefix)) = stack.pop() {
        let Ok(entries) = Dir::read_from(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let name_os = OsStr::from_bytes(name);
            let Ok(st) = rustix::fs::statat(&dir, name_os, AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            let rel = format!("{prefix}{}", name_os.to_string_lossy());
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                if skip.contains(&rel.as_str()) {
                    continue;
                }
                if let Ok(sub) = rustix::fs::openat(&dir, name_os, dir_flags(), Mode::empty()) {
                    stack.push((sub, format!("{rel}/")));
                }
                continue;
            }
            each(Entry {
                size: size(&st),
                mtime_ns: mtime_ns(&st),
                rel,
            });
            count += 1;
            if count >= limit {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn links_on_the_way_end_the_read() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("token"), "secret").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/f"), "inside").unwrap();
        symlink(outside.path(), dir.path().join("a/out")).unwrap();
        symlink(outside.path().join("token"), dir.path().join("a/t")).unwrap();
        let root = open_root(dir.path()).unwrap();
        assert_eq!(read_small(&root, "a/b/f", 100).as_deref(), Some("inside"));
        assert_eq!(
            read_small(&root, "a/out/token", 100),
            None,
            "a linked directory"
        );
        assert_eq!(read_small(&root, "a/t", 100), None, "a linked file");
        assert_eq!(read_small(&root, "a/../a/b/f", 100), None);
        assert_eq!(read_small(&root, "/etc/hostname", 100), None);
        assert_eq!(read_small(&root, "a/b/f", 3), None, "larger than asked");
        assert_eq!(read_small(&root, "a/b", 100), None, "a directory");
        let mut seen = Vec::new();
        walk(&root, &[], 100, |e| seen.push(e.rel));
        seen.sort();
        assert_eq!(seen, ["a/b/f", "a/out", "a/t"]);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_fifo_does_not_hang_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        rustix::fs::mknodat(
            CWD,
            dir.path().join("HEAD").as_path(),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let root = open_root(dir.path()).unwrap();
        assert_eq!(read_small(&root, "HEAD", 100), None);
    }
}
