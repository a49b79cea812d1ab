//! The project's own files on the host (see `crate::source` for what travels):
//!
//! ```text
//! objects/<sha256>[.x|.s]   every file once, by content (0644, 0755, or 0600 for a secret)
//! releases/<id>/files       the release's manifest: `KIND OBJECT PATH` a line
//! releases/<id>/builds      the images it builds: `SERVICE IMAGE` a line
//! tree/                     the live tree: Compose's project directory, what bind mounts see
//! tree.files, tree.paths    the manifest the tree was last laid out from, and its paths
//! tree.stamp                touched after that: a synced file newer than it was edited here
//! set-aside/<id>/           the host's edits a release moved aside before replacing them
//! ```
//!
//! A release's images are built from a staging copy of its files (hard links to the
//! objects) before anything running is touched; the tree changes only after the build, and
//! only the files that differ: a file a container created there is never touched, a file
//! the laptop deleted goes, and a synced file edited on the host is moved aside (never
//! overwritten). A symlink a container planted on the way to a synced path is moved aside
//! too, so that laying out the tree never writes through it.

use std::collections::HashSet;

/// The prepare command's part (after `@@HB@@`): the objects the host has (`o NAME`), and
/// the synced files edited on the host since they were laid out (`m PATH`).
pub const STATE: &str = "ls \"$d/objects\" 2>/dev/null | sed 's/^/o /'; \
     if [ -f \"$d/tree.paths\" ] && [ -e \"$d/tree.stamp\" ]; then \
       ( cd \"$d/tree\" 2>/dev/null && find . -newer \"$d/tree.stamp\" \\( -type f -o -type l \\) 2>/dev/null ) | \
       sed 's|^\\./||' | grep -Fx -f \"$d/tree.paths\" 2>/dev/null | sed 's/^/m /'; fi";

/// What [`STATE`] printed: the objects the host has and the files edited there.
pub fn parse_state(part: &str) -> (HashSet<String>, Vec<String>) {
    let mut objects = HashSet::new();
    let mut edited = Vec::new();
    for line in part.lines() {
        if let Some(o) = line.strip_prefix("o ") {
            objects.insert(o.to_string());
        } else if let Some(m) = line.strip_prefix("m ") {
            edited.push(m.to_string());
        }
    }
    (objects, edited)
}

/// Shell functions for the release job (`$d`, `$p`, `$j`, `$compose` set; `say`, `quote`
/// defined):
/// - `hbc ID ARGS…`: Compose on release ID: its compose file, with the live tree as the
///   project directory when the release carries files (and no `.env` of the tree read);
/// - `build_release ID`: builds the images release ID names that the engine lacks, from a
///   staging copy of its files; the tree and the containers are untouched;
/// - `apply_tree ID`: lays out release ID's files in the live tree;
/// - `prune_tree`: objects and built images no release on the host names, removed (an
///   image a container uses stays).
pub const JOB_FNS: &str = r#"hbc() {
  r="$d/releases/$1"; shift
  if [ -f "$r/files" ]; then
    mkdir -p "$d/tree" && ( cd "$r" && exec $compose -p "$p" --project-directory "$d/tree" --env-file /dev/null -f compose.yml "$@" )
  else
    ( cd "$r" && exec $compose -p "$p" -f compose.yml "$@" )
  fi
}
# paths MANIFEST: its paths; dirs_of MANIFEST…: the directories above them
paths() { sed 's/^[^ ]* [^ ]* //' "$@"; }
dirs_of() { paths "$@" | awk '{ while (sub(/\/[^\/]*$/, "")) print }' | LC_ALL=C sort -u; }
# lay_out MANIFEST DIR HOW: every entry of MANIFEST under DIR (HOW: ln to hard-link, cp to copy)
lay_out() {
  dirs_of "$1" | tr '\n' '\0' | ( cd "$2" && xargs -0 mkdir -p . ) || return 1
  while IFS= read -r line; do
    k=${line%% *}; rest=${line#* }; o=${rest%% *}; f=${rest#* }
    if [ "$k" = l ]; then ln -s "$(cat "$d/objects/$o")" "$2/$f" || return 1
    else $3 "$d/objects/$o" "$2/$f" 2>/dev/null || cp "$d/objects/$o" "$2/$f" || return 1; fi
  done < "$1"
}
build_release() {
  b="$d/releases/$1/builds"; [ -s "$b" ] || return 0
  need=
  while read -r svc img; do docker image inspect "$img" >/dev/null 2>&1 || need="$need $svc"; done < "$b"
  [ -n "$need" ] || return 0
  say step build $need
  s="$d/stage/$1"; rm -rf "$s"; mkdir -p "$s" || return 1
  if ! lay_out "$d/releases/$1/files" "$s" ln; then rm -rf "$s"; say fail could not lay out the release files for the build; return 1; fi
  ( cd "$d/releases/$1" && exec $compose -p "$p" --project-directory "$s" --env-file /dev/null -f compose.yml --progress plain build $need ) > "$j/build.out" 2>&1 &
  bp=$!; up=$bp
  n=0
  while kill -0 "$bp" 2>/dev/null; do
    c=$(wc -l < "$j/build.out" | tr -d ' ')
    [ "$c" -gt "$n" ] && { sed -n "$((n + 1)),${c}p" "$j/build.out" | grep -E '^#[0-9]+ \[' | quote; n=$c; }
    sleep 0.5
  done
  wait "$bp"; rc=$?; up=
  rm -rf "$s"
  if [ "$rc" -ne 0 ]; then say step build-log; grep -v '^$' "$j/build.out" | tail -n 40 | quote; say fail the build failed; return 1; fi
  say ok
}
apply_tree() {
  m="$d/releases/$1/files"; [ -f "$m" ] || return 0
  t="$d/tree"; a="$d/set-aside/$1"
  mkdir -p "$t" || return 1
  old="$d/tree.files"; [ -f "$old" ] || old=/dev/null
  # synced files edited here since they were laid out, and symlinks on the way to a synced
  # path: moved aside, never written through or over
  : > "$j/aside"
  if [ -e "$d/tree.stamp" ] && [ -f "$d/tree.paths" ]; then
    ( cd "$t" && find . -newer "$d/tree.stamp" \( -type f -o -type l \) ) | sed 's|^\./||' | grep -Fx -f "$d/tree.paths" >> "$j/aside"
  fi
  dirs_of "$m" "$old" > "$j/dirs"
  ( cd "$t" && find . -type l ) | sed 's|^\./||' | grep -Fx -f "$j/dirs" >> "$j/aside"
  while IFS= read -r f; do
    [ -e "$t/$f" ] || [ -L "$t/$f" ] || continue
    case "$f" in */*) mkdir -p "$a/${f%/*}" ;; *) mkdir -p "$a" ;; esac
    mv "$t/$f" "$a/$f" && say aside "$f"
  done < "$j/aside"
  # what changed (c), stayed (s) or went (d) against the tree's last manifest
  awk 'FILENAME == ARGV[1] { p = $0; sub(/^[^ ]+ [^ ]+ /, "", p); o[p] = $1 " " $2; next }
       { p = $0; sub(/^[^ ]+ [^ ]+ /, "", p); seen[p] = 1; print ((p in o && o[p] == $1 " " $2) ? "s " : "c ") $0 }
       END { for (p in o) if (!(p in seen)) print "d " o[p] " " p }' "$old" "$m" > "$j/ops"
  grep '^c ' "$j/ops" | cut -c3- > "$j/write"
  grep '^s ' "$j/ops" | cut -c3- | while IFS= read -r line; do
    f=${line#* }; f=${f#* }; [ -e "$t/$f" ] || [ -L "$t/$f" ] || printf '%s\n' "$line"
  done >> "$j/write"
  grep '^d ' "$j/ops" | cut -c3- | while IFS= read -r line; do
    f=${line#* }; f=${f#* }; rm -f "$t/$f"
    case "$f" in */*) ( cd "$t" && rmdir -p "${f%/*}" 2>/dev/null ) ;; esac
  done
  paths "$j/write" | tr '\n' '\0' | ( cd "$t" && xargs -0 rm -f -- )
  lay_out "$j/write" "$t" cp || return 1
  cp "$m" "$d/tree.files" && sed 's/^[^ ]* [^ ]* //' "$m" > "$d/tree.paths" && touch "$d/tree.stamp"
}
prune_tree() {
  [ -d "$d/objects" ] || return 0
  cat "$d"/releases/*/files 2>/dev/null | cut -d' ' -f2 | LC_ALL=C sort -u > "$j/used"
  ls "$d/objects" | LC_ALL=C sort | LC_ALL=C comm -23 - "$j/used" | while IFS= read -r o; do rm -f "$d/objects/$o"; done
  cat "$d"/releases/*/builds 2>/dev/null | cut -d' ' -f2 | LC_ALL=C sort -u > "$j/used"
  docker image ls --format '{{.Repository}}:{{.Tag}}' --filter "reference=homebase/$p-*" 2>/dev/null | LC_ALL=C sort | LC_ALL=C comm -23 - "$j/used" |
    while IFS= read -r i; do docker rmi "$i" >/dev/null 2>&1 && say removed-image "$i"; done
  rm -rf "$d/stage"
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_reads_objects_and_edits() {
        let (objects, edited) = parse_state("o abc\no def.x\nm src/app.py\nm a b.txt\nnoise\n");
        assert!(objects.contains("abc") && objects.contains("def.x"));
        assert_eq!(edited, vec!["src/app.py", "a b.txt"]);
    }
}
