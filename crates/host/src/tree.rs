//! The project's own files on the host (see `crate::source` for what travels):
//!
//! ```text
//! objects/<sha256>[.x|.s]   every file once, by content (0644, 0755, or 0600 for a secret)
//! releases/<id>/files       the release's manifest: `KIND OBJECT PATH` a line (sent as a
//!                           change to the running release's, `files.base` naming it, when
//!                           the laptop deployed that one: `patch_manifest`)
//! releases/<id>/builds      the images it builds: `FILE SERVICE IMAGE` a line (FILE:
//!                           compose.yml, or loops.yml for the loops' images)
//! tree/                     the live tree: Compose's project directory, what bind mounts see
//! tree.files, tree.paths    the manifest the tree was last laid out from, and its paths
//! tree.stamp                touched after that: a synced file newer than it was edited here
//! stage/, stage.files       what builds read: hard links to the objects, as of the last build
//! set-aside/<id>/           the host's edits a release moved aside before replacing them
//! ```
//!
//! A release's images are built from a staging copy of its files (hard links to the
//! objects, changed only where the release differs) before anything running is touched; the tree changes only after the build, and
//! only the files that differ: a file a container created there is never touched, a file
//! the laptop deleted goes, and a synced file edited on the host is moved aside (never
//! overwritten). A symlink a container planted on the way to a synced path is moved aside
//! too, so that laying out the tree never writes through it.

use std::collections::HashSet;

/// The prepare command's part (after `@@HB@@`): the objects the host has (`o NAME`), the
/// project repository's deployed commit (`g ID`), and the synced files edited on the host
/// since they were laid out (`m PATH`).
pub const STATE: &str = "ls \"$d/objects\" 2>/dev/null | sed 's/^/o /'; \
     [ -f \"$d/repo.git/refs/heads/deployed\" ] && sed 's/^/g /' \"$d/repo.git/refs/heads/deployed\"; \
     if [ -f \"$d/tree.paths\" ] && [ -e \"$d/tree.stamp\" ]; then \
       ( cd \"$d/tree\" 2>/dev/null && find . -newer \"$d/tree.stamp\" \\( -type f -o -type l \\) 2>/dev/null ) | \
       sed 's|^\\./||' | grep -Fx -f \"$d/tree.paths\" 2>/dev/null | sed 's/^/m /'; fi";

/// What [`STATE`] printed.
#[derive(Debug, Default)]
pub struct State {
    /// The objects the host has.
    pub objects: HashSet<String>,
    /// The synced files edited on the host.
    pub edited: Vec<String>,
    /// The commit of the project's repository the host has (`refs/heads/deployed`).
    pub deployed: Option<String>,
}

pub fn parse_state(part: &str) -> State {
    let mut state = State::default();
    for line in part.lines() {
        if let Some(o) = line.strip_prefix("o ") {
            state.objects.insert(o.to_string());
        } else if let Some(m) = line.strip_prefix("m ") {
            state.edited.push(m.to_string());
        } else if let Some(g) = line.strip_prefix("g ") {
            let g = g.trim();
            if g.len() >= 40 && g.bytes().all(|b| b.is_ascii_hexdigit()) {
                state.deployed = Some(g.to_string());
            }
        }
    }
    state
}

/// Shell functions for the release job (`$d`, `$p`, `$j`, `$compose` set; `say`, `quote`
/// defined). Their own variables start with `_`: a function shares the job's variables.
/// - `hbc ID ARGS…`: Compose on release ID: its compose file, with the live tree as the
///   project directory when the release carries files (and no `.env` of the tree read);
/// - `build_release ID`: builds the images release ID names that the engine lacks, from a
///   staging copy of its files; the tree and the containers are untouched;
/// - `apply_tree ID`: lays out release ID's files in the live tree;
/// - `prune_tree`: objects and built images no release on the host names, removed (an
///   image a container uses stays).
pub const JOB_FNS: &str = r#"hbc() {
  _r="$d/releases/$1"; shift
  if [ -f "$_r/files" ]; then
    mkdir -p "$d/tree" && ( cd "$_r" && exec $compose -p "$p" --project-directory "$d/tree" --env-file /dev/null -f compose.yml "$@" )
  else
    ( cd "$_r" && exec $compose -p "$p" -f compose.yml "$@" )
  fi
}
# patch_manifest ID: release ID's manifest from the one of the release it names (files.base)
# and the change the laptop sent (files.delta: `+ KIND OBJECT PATH`, `- PATH`)
patch_manifest() {
  _r="$d/releases/$1"; [ -f "$_r/files.delta" ] || return 0
  _b="$d/releases/$(cat "$_r/files.base")/files"
  [ -f "$_b" ] || { say fail the manifest of release $(cat "$_r/files.base") is not on the host; deploy again; return 1; }
  awk 'FILENAME == ARGV[1] { p = $0; sub(/^. /, "", p); if (substr($0, 1, 1) == "-") gone[p] = 1; else { q = p; sub(/^[^ ]+ [^ ]+ /, "", q); put[q] = p } next }
       { p = $0; sub(/^[^ ]+ [^ ]+ /, "", p); if (!(p in gone) && !(p in put)) print }
       END { for (q in put) print put[q] }' "$_r/files.delta" "$_b" > "$_r/files.tmp" &&
    mv "$_r/files.tmp" "$_r/files" && rm -f "$_r/files.delta"
}
# paths MANIFEST: its paths; dirs_of MANIFEST…: the directories above them
paths() { sed 's/^[^ ]* [^ ]* //' "$@"; }
dirs_of() { paths "$@" | awk '{ while (sub(/\/[^\/]*$/, "")) print }' | LC_ALL=C sort -u; }
# lay_out MANIFEST DIR HOW: every entry of MANIFEST under DIR (HOW: ln to hard-link, cp to copy).
# The project's files keep their modes (0644, 0755; secrets 0600) and directories are 0755
# for containers running as other users; homebase's directory above them is 0700.
lay_out() {
  dirs_of "$1" | tr '\n' '\0' | ( umask 022; cd "$2" && xargs -0 mkdir -p . ) || return 1
  while IFS= read -r _line; do
    _k=${_line%% *}; _rest=${_line#* }; _o=${_rest%% *}; _f=${_rest#* }
    if [ "$_k" = l ]; then ln -s "$(cat "$d/objects/$_o")" "$2/$_f" || return 1
    else $3 "$d/objects/$_o" "$2/$_f" 2>/dev/null || cp -p "$d/objects/$_o" "$2/$_f" || return 1; fi
  done < "$1"
}
# sync_dir MANIFEST DIR OLD HOW: DIR, laid out from manifest OLD before, to MANIFEST: what
# changed or is missing is written (HOW: cp or ln), what went is removed, the rest untouched
sync_dir() {
  awk 'FILENAME == ARGV[1] { p = $0; sub(/^[^ ]+ [^ ]+ /, "", p); o[p] = $1 " " $2; next }
       { p = $0; sub(/^[^ ]+ [^ ]+ /, "", p); seen[p] = 1; print ((p in o && o[p] == $1 " " $2) ? "s " : "c ") $0 }
       END { for (p in o) if (!(p in seen)) print "d " o[p] " " p }' "$3" "$1" > "$j/ops"
  grep '^c ' "$j/ops" | cut -c3- > "$j/write"
  grep '^s ' "$j/ops" | cut -c3- | while IFS= read -r _line; do
    _f=${_line#* }; _f=${_f#* }; [ -e "$2/$_f" ] || [ -L "$2/$_f" ] || printf '%s\n' "$_line"
  done >> "$j/write"
  grep '^d ' "$j/ops" | cut -c3- | while IFS= read -r _line; do
    _f=${_line#* }; _f=${_f#* }; rm -f "$2/$_f"
    case "$_f" in */*) ( cd "$2" && rmdir -p "${_f%/*}" 2>/dev/null ) ;; esac
  done
  paths "$j/write" | tr '\n' '\0' | ( cd "$2" && xargs -0 rm -f -- )
  lay_out "$j/write" "$2" "$4"
}
build_release() {
  _b="$d/releases/$1/builds"; [ -s "$_b" ] || return 0
  _need=; : > "$j/need"
  while read -r _file _svc _img; do
    docker image inspect "$_img" >/dev/null 2>&1 || { _need="$_need $_svc"; echo "$_file $_svc" >> "$j/need"; }
  done < "$_b"
  [ -n "$_need" ] || return 0
  say step build $_need
  # the staging copy (hard links to the objects) follows the release's files: only what
  # changed since the last build is linked anew
  _s="$d/stage"; _so="$d/stage.files"; [ -f "$_so" ] || rm -rf "$_s"; mkdir -p "$_s" || return 1
  [ -f "$_so" ] || : > "$_so"
  if ! sync_dir "$d/releases/$1/files" "$_s" "$_so" ln; then
    rm -rf "$_s" "$_so"; say fail could not lay out the release files for the build; return 1
  fi
  cp "$d/releases/$1/files" "$_so"
  : > "$j/build.out"; _rc=0
  for _file in compose.yml loops.yml build.yml; do
    _svcs=$(awk -v f="$_file" '$1 == f { printf "%s ", $2 }' "$j/need")
    [ -n "$_svcs" ] || continue
    ( cd "$d/releases/$1" && exec $compose -p "$p" --project-directory "$_s" --env-file /dev/null -f "$_file" --progress plain build $_svcs ) >> "$j/build.out" 2>&1 &
    _bp=$!; up=$_bp
    _n=0
    while kill -0 "$_bp" 2>/dev/null; do
      _c=$(wc -l < "$j/build.out" | tr -d ' ')
      [ "$_c" -gt "$_n" ] && { sed -n "$((_n + 1)),${_c}p" "$j/build.out" | grep -E '^#[0-9]+ \[' | quote; _n=$_c; }
      sleep 0.5
    done
    wait "$_bp"; _rc=$?; up=
    [ "$_rc" -eq 0 ] || break
  done
  if [ "$_rc" -ne 0 ]; then say step build-log; grep -v '^$' "$j/build.out" | tail -n 40 | quote; say fail the build failed; return 1; fi
  say ok
}
# sync_repo ID: the project's repository from the release's bundle into repo.git (homebase's
# own bare repository: never a loop's), and a checkout on branch homebase/NAME for each loop
# with `workspace = "git"` that has none yet
sync_repo() {
  _r="$d/releases/$1"
  [ -f "$_r/repo.bundle" ] || [ -s "$_r/git-loops" ] || return 0
  prep_fail="could not bring the project's repository to the host"
  command -v git >/dev/null 2>&1 || { say fail git is not installed on the host; return 1; }
  if [ -f "$_r/repo.bundle" ]; then
    [ -d "$d/repo.git" ] || git init -q --bare "$d/repo.git" || return 1
    { git -C "$d/repo.git" symbolic-ref HEAD refs/heads/deployed &&
      git -C "$d/repo.git" fetch -q "$_r/repo.bundle" "+HEAD:refs/heads/deployed"; } > "$j/git.out" 2>&1 ||
      { quote < "$j/git.out"; say fail the project repository could not be brought to the host; return 1; }
    rm -f "$_r/repo.bundle"
  fi
  if [ -s "$_r/git-loops" ] && ! docker image inspect homebase/git:1 >/dev/null 2>&1; then
    # homebase's own git helper (commits and merges in the loops' workspaces run there,
    # never in a loop's image): built once, from the registry
    say step git-helper
    printf 'FROM alpine:3.21\nRUN apk add --no-cache git\n' | docker build -q -t homebase/git:1 - > "$j/git.out" 2>&1 ||
      { tail -n 5 "$j/git.out" | quote; say fail "homebase's git helper image homebase/git:1 could not be built (FROM alpine:3.21, it needs the registry once); build or load it on the host, then deploy again"; return 1; }
  fi
  while IFS= read -r _l; do
    _w="$d/loops/$_l/workspace"
    { [ -e "$_w" ] || [ -L "$_w" ]; } && continue
    { mkdir -p "$d/loops/$_l" && git clone -q "$d/repo.git" "$_w" && git -C "$_w" checkout -q -b "homebase/$_l"; } > "$j/git.out" 2>&1 ||
      { quote < "$j/git.out"; say fail the workspace of loop $_l could not be made; return 1; }
    say workspace "$_l"
  done < "$_r/git-loops"
  prep_fail=
}
apply_tree() {
  _m="$d/releases/$1/files"; [ -f "$_m" ] || return 0
  _t="$d/tree"; _a="$d/set-aside/$1"
  ( umask 022; mkdir -p "$_t" ) || return 1
  _old="$d/tree.files"; [ -f "$_old" ] || _old=/dev/null
  # synced files edited here since they were laid out, and symlinks on the way to a synced
  # path: moved aside, never written through or over
  : > "$j/aside"
  if [ -e "$d/tree.stamp" ] && [ -f "$d/tree.paths" ]; then
    ( cd "$_t" && find . -newer "$d/tree.stamp" \( -type f -o -type l \) ) | sed 's|^\./||' | grep -Fx -f "$d/tree.paths" >> "$j/aside"
  fi
  # a synced file a container replaced with a symlink: Compose would read an env file
  # through it on this host
  while IFS= read -r _line; do
    _k=${_line%% *}; _f=${_line#* }; _f=${_f#* }
    [ "$_k" != l ] && [ -L "$_t/$_f" ] && printf '%s\n' "$_f"
  done < "$_m" >> "$j/aside"
  dirs_of "$_m" "$_old" > "$j/dirs"
  ( cd "$_t" && find . -type l ) | sed 's|^\./||' | grep -Fx -f "$j/dirs" >> "$j/aside"
  while IFS= read -r _f; do
    [ -e "$_t/$_f" ] || [ -L "$_t/$_f" ] || continue
    case "$_f" in */*) mkdir -p "$_a/${_f%/*}" ;; *) mkdir -p "$_a" ;; esac
    mv "$_t/$_f" "$_a/$_f" && say aside "$_f"
  done < "$j/aside"
  sync_dir "$_m" "$_t" "$_old" cp || return 1
  cp "$_m" "$d/tree.files" && sed 's/^[^ ]* [^ ]* //' "$_m" > "$d/tree.paths" && touch "$d/tree.stamp"
}
prune_tree() {
  [ -d "$d/objects" ] || return 0
  cat "$d"/releases/*/files 2>/dev/null | cut -d' ' -f2 | LC_ALL=C sort -u > "$j/used"
  ls "$d/objects" | LC_ALL=C sort | LC_ALL=C comm -23 - "$j/used" | while IFS= read -r _o; do rm -f "$d/objects/$_o"; done
  cat "$d"/releases/*/builds 2>/dev/null | cut -d' ' -f3 | LC_ALL=C sort -u > "$j/used"
  # only repositories this project's releases name: `homebase/$p-*` also matches another
  # project called `$p-something`
  sed 's/:[^:]*$//' "$j/used" | LC_ALL=C sort -u > "$j/repos"
  docker image ls --format '{{.Repository}}:{{.Tag}}' --filter "reference=homebase/$p-*" 2>/dev/null | LC_ALL=C sort | LC_ALL=C comm -23 - "$j/used" |
    while IFS= read -r _i; do
      grep -qFx "${_i%:*}" "$j/repos" && docker rmi "$_i" >/dev/null 2>&1 && say removed-image "$_i"
    done
}
"#;

#[cfg(test)]
mod tests {
    #[test]
    fn the_job_builds_the_git_helper_the_daemon_runs() {
        let image = homebase_proto::layout::GIT_HELPER_IMAGE;
        assert!(super::JOB_FNS.contains(&format!("docker image inspect {image} ")));
        assert!(super::JOB_FNS.contains(&format!("docker build -q -t {image} -")));
        let dockerfile = homebase_proto::layout::GIT_HELPER_DOCKERFILE.replace('\n', "\\n");
        assert!(
            super::JOB_FNS.contains(&format!("printf '{dockerfile}'")),
            "{dockerfile}"
        );
    }

    use super::*;

    #[test]
    fn the_state_reads_objects_and_edits() {
        let s = parse_state(
            "o abc\no def.x\nm src/app.py\nm a b.txt\nnoise\ng 0123456789abcdef0123456789abcdef01234567\n",
        );
        assert!(s.objects.contains("abc") && s.objects.contains("def.x"));
        assert_eq!(s.edited, vec!["src/app.py", "a b.txt"]);
        assert_eq!(
            s.deployed.as_deref(),
            Some("0123456789abcdef0123456789abcdef01234567")
        );
        assert_eq!(parse_state("g ref: refs/heads/x\n").deployed, None);
    }
}
