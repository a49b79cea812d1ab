//! A service's definition normalised (lists as maps where Compose merges by key), and files
//! and `extends` merged as Compose merges them.

use super::yaml::{MergeTag, merge_tag, strip_tags};
use crate::error::StackError;
use crate::interpolate::Vars;
use serde_norway::Mapping;
use serde_norway::Value;
use std::path::Path;

/// Brings list forms to their mapping forms so that files merge key by key.
pub(super) fn normalize_service(
    def: &mut Value,
    name: &str,
    path: &Path,
    vars: &Vars,
) -> Result<(), StackError> {
    if def.is_null() {
        *def = Value::Mapping(Mapping::new());
    }
    // `web: !reset {}` removes the service; `web: !override {…}` replaces it whole
    let def = match def {
        Value::Tagged(t) if t.tag == "reset" => return Ok(()),
        Value::Tagged(t) if t.tag == "override" => &mut t.value,
        d => d,
    };
    let Value::Mapping(m) = def else {
        return Err(StackError::invalid(
            path,
            format!("services.{name}"),
            "a service must be a mapping",
        ));
    };
    for key in [
        "environment",
        "labels",
        "annotations",
        "extra_hosts",
        "sysctls",
    ] {
        if let Some(v) = m.get_mut(key) {
            let resolve = key == "environment";
            let v = match v {
                Value::Tagged(t) if t.tag == "reset" => continue,
                Value::Tagged(t) => &mut t.value,
                v => v,
            };
            *v =
                Value::Mapping(list_to_map(v, resolve, vars).map_err(|msg| {
                    StackError::invalid(path, format!("services.{name}.{key}"), msg)
                })?);
        }
    }
    if let Some(v) = m.get_mut("depends_on")
        && let Value::Sequence(seq) = v
    {
        let mut map = Mapping::new();
        for item in seq.iter() {
            let Some(dep) = item.as_str() else {
                return Err(StackError::invalid(
                    path,
                    format!("services.{name}.depends_on"),
                    "expected service names",
                ));
            };
            let mut cond = Mapping::new();
            cond.insert("condition".into(), "service_started".into());
            map.insert(dep.into(), Value::Mapping(cond));
        }
        *v = Value::Mapping(map);
    }
    for key in ["env_file", "profiles"] {
        if let Some(Value::String(s)) = m.get(key) {
            let s = s.clone();
            m.insert(key.into(), Value::Sequence(vec![Value::String(s)]));
        }
    }
    Ok(())
}

pub(super) fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

pub(super) fn list_to_map(v: &Value, resolve_bare: bool, vars: &Vars) -> Result<Mapping, String> {
    match v {
        Value::Null => Ok(Mapping::new()),
        Value::Mapping(m) => {
            let mut out = Mapping::new();
            for (k, val) in m {
                let key = scalar_string(k).ok_or("keys must be strings")?;
                let val = match val {
                    Value::Null if resolve_bare => vars
                        .get(&key)
                        .map(|s| Value::String(s.clone()))
                        .unwrap_or(Value::Null),
                    Value::Null => Value::Null,
                    // `KEY: !reset null`: kept for the merge, which removes the key
                    t @ Value::Tagged(_) if merge_tag(t) == Some(MergeTag::Reset) => t.clone(),
                    other => Value::String(
                        scalar_string(other)
                            .ok_or_else(|| format!("`{key}` must have a plain value"))?,
                    ),
                };
                out.insert(Value::String(key), val);
            }
            Ok(out)
        }
        Value::Sequence(seq) => {
            let mut out = Mapping::new();
            for item in seq {
                let s = scalar_string(item).ok_or("list entries must be `KEY=value` strings")?;
                let (k, val) = match s.split_once('=') {
                    Some((k, v)) => (k.to_string(), Value::String(v.to_string())),
                    None => match s.split_once(':') {
                        // extra_hosts also allows `host:ip`
                        Some((k, v)) if !resolve_bare => {
                            (k.to_string(), Value::String(v.to_string()))
                        }
                        _ => {
                            let val = if resolve_bare {
                                vars.get(&s)
                                    .map(|x| Value::String(x.clone()))
                                    .unwrap_or(Value::Null)
                            } else {
                                Value::Null
                            };
                            (s, val)
                        }
                    },
                };
                out.insert(Value::String(k), val);
            }
            Ok(out)
        }
        _ => Err("expected a mapping or a list of `KEY=value`".into()),
    }
}

/// Sequences under these keys are replaced by an override, not appended to.
pub(super) const REPLACED: &[&str] = &[
    "command",
    "entrypoint",
    "test",
    "profiles",
    "dns",
    "dns_search",
    "cap_add",
    "cap_drop",
];

/// Merges `over` into `base` as Compose merges an override file, merge tags applied
/// (`!reset`, `!override`).
pub(crate) fn merge_mapping(base: &mut Mapping, over: Mapping) {
    merge_tagged(base, over, true);
}

/// With `strip`, the result has no merge tags left; without, values new to `base` keep
/// theirs (a file's own parts, merged before the file is merged over the previous ones).
pub(super) fn merge_tagged(base: &mut Mapping, over: Mapping, strip: bool) {
    for (k, v) in over {
        let replace = k.as_str().is_some_and(|k| REPLACED.contains(&k));
        match merge_tag(&v) {
            Some(MergeTag::Reset) if base.contains_key(&k) || strip => {
                base.remove(&k);
                continue;
            }
            Some(MergeTag::Override) if base.contains_key(&k) || strip => {
                if let Some(v) = strip_tags(v) {
                    base.insert(k, v);
                }
                continue;
            }
            _ => {}
        }
        match (base.get_mut(&k), v) {
            (Some(Value::Mapping(b)), Value::Mapping(o)) => merge_tagged(b, o, strip),
            (Some(Value::Sequence(b)), Value::Sequence(o)) if !replace => {
                let field = k.as_str().unwrap_or_default();
                for item in o
                    .into_iter()
                    .filter_map(|i| if strip { strip_tags(i) } else { Some(i) })
                {
                    // a mount replaces the one at the same target; a secret or config the
                    // one of the same source
                    let key = seq_key(field, &item);
                    let same = key.as_ref().and_then(|key| {
                        b.iter()
                            .position(|x| seq_key(field, x).as_ref() == Some(key))
                    });
                    match same {
                        Some(i) => b[i] = item,
                        None if !b.contains(&item) => b.push(item),
                        None => {}
                    }
                }
            }
            (_, v) => {
                if strip {
                    if let Some(v) = strip_tags(v) {
                        base.insert(k, v);
                    }
                } else {
                    base.insert(k, v);
                }
            }
        }
    }
}

/// What identifies an entry of a list Compose merges by key: a mount's target (`volumes`), a
/// secret's or config's source.
pub(super) fn seq_key(field: &str, item: &Value) -> Option<String> {
    let target = |s: &str| -> Option<String> {
        let mut parts = s.split(':');
        let first = parts.next()?;
        Some(parts.next().unwrap_or(first).to_string())
    };
    match (field, item) {
        ("volumes", Value::String(s)) => target(s),
        ("volumes", Value::Mapping(m)) => m.get("target").and_then(scalar_string),
        ("secrets" | "configs", Value::String(s)) => Some(s.clone()),
        ("secrets" | "configs", Value::Mapping(m)) => m.get("source").and_then(scalar_string),
        _ => None,
    }
}

/// The files given with `-f`, in order: tags applied.
pub(super) fn merge_documents(base: &mut Mapping, over: Mapping) {
    merge_tagged(base, over, true);
}

/// A file's includes and its own content: its tags kept for the merge over earlier files.
pub(super) fn merge_own(base: &mut Mapping, over: Mapping) {
    merge_tagged(base, over, false);
}
