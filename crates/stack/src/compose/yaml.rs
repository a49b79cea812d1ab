//! Compose's YAML: one document, bounded nesting, anchors and merge keys (`<<`), and the
//! `!reset` and `!override` tags.

use crate::error::StackError;
use serde_norway::Mapping;
use serde_norway::Value;
use std::path::Path;

/// How deep `[`/`{` may nest in a compose file. Real files stay under 10; the YAML parser's
/// time grows with the square of the depth, so a deeper file is refused before parsing.
pub(super) const MAX_YAML_NESTING: usize = 128;

/// The deepest flow-collection nesting in `text` (brackets inside quotes and comments
/// ignored), with the line where it passes [`MAX_YAML_NESTING`].
pub(super) fn nesting_too_deep(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (n, line) in text.lines().enumerate() {
        // block nesting: two spaces per level at the least
        let indent = line.len() - line.trim_start_matches([' ', '-']).len();
        if indent / 2 > MAX_YAML_NESTING {
            return Some(n + 1);
        }
        let mut quote: Option<char> = None;
        let mut prev = ' ';
        for c in line.chars() {
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None => match c {
                    '"' | '\'' if prev.is_whitespace() || "[{,:".contains(prev) => quote = Some(c),
                    '#' if prev.is_whitespace() => break,
                    '[' | '{' => {
                        depth += 1;
                        if depth > MAX_YAML_NESTING {
                            return Some(n + 1);
                        }
                    }
                    ']' | '}' => depth = depth.saturating_sub(1),
                    _ => {}
                },
            }
            prev = c;
        }
    }
    None
}

/// Parses one YAML file into a mapping with merge keys applied.
pub fn parse_yaml(path: &Path, text: &str) -> Result<Mapping, StackError> {
    if let Some(line) = nesting_too_deep(text) {
        return Err(StackError::Yaml {
            path: path.to_path_buf(),
            line,
            column: 0,
            message: format!(
                "collections nest more than {MAX_YAML_NESTING} levels deep; a compose file never needs that"
            ),
        });
    }
    let mut value: Value = serde_norway::from_str(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        let message = e.to_string();
        // the parser stops an alias bomb (aliases of aliases that expand to billions of
        // nodes) before it is expanded; say what it is
        let message = if message.contains("repetition limit exceeded") {
            "its aliases (`*name`) would expand to too many nodes; a compose file never needs              that (is it an alias bomb?)"
                .to_string()
        } else if let Some(tab) = text
            .lines()
            .position(|l| l.trim_start_matches(' ').starts_with('\t'))
        {
            // YAML forbids tabs in indentation; the parser's own words do not say so
            format!(
                "{message}; line {} is indented with a tab, and YAML allows only spaces there",
                tab + 1
            )
        } else {
            message
        };
        StackError::Yaml {
            path: path.to_path_buf(),
            line,
            column,
            message,
        }
    })?;
    resolve_merges(&mut value).map_err(|e| StackError::Yaml {
        path: path.to_path_buf(),
        line: 0,
        column: 0,
        message: format!("invalid merge key (`<<`): {e}"),
    })?;
    crate::validate::file(&value, path)?;
    match value {
        Value::Mapping(m) => Ok(m),
        _ => Err(StackError::invalid(
            path,
            "(top level)",
            "a Compose file must be a mapping with a `services` key",
        )),
    }
}

/// Resolves YAML merge keys (`<<: *a`, `<<: [*a, *b]`) from the inside out, so that an
/// anchored mapping that itself merges others brings all of their keys wherever it is merged
/// again. A mapping's own keys win, then the merged mappings in their order.
pub(super) fn resolve_merges(v: &mut Value) -> Result<(), String> {
    match v {
        Value::Mapping(m) => {
            for val in m.values_mut() {
                resolve_merges(val)?;
            }
            let Some(merge) = m.remove("<<") else {
                return Ok(());
            };
            let sources = match merge {
                Value::Mapping(x) => vec![x],
                Value::Sequence(seq) => seq
                    .into_iter()
                    .map(|x| match x {
                        Value::Mapping(x) => Ok(x),
                        _ => Err("each element of a merge list must be a mapping".to_string()),
                    })
                    .collect::<Result<_, _>>()?,
                _ => return Err("the value of `<<` must be a mapping or a list of them".into()),
            };
            for src in sources {
                for (k, val) in src {
                    m.entry(k).or_insert(val);
                }
            }
            Ok(())
        }
        Value::Sequence(seq) => seq.iter_mut().try_for_each(resolve_merges),
        Value::Tagged(t) => resolve_merges(&mut t.value),
        _ => Ok(()),
    }
}

/// Compose's merge tags in override files: `!reset` (the attribute goes, whatever the
/// value), `!override` (the value replaces the base's instead of merging with it).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum MergeTag {
    Reset,
    Override,
}

pub(super) fn merge_tag(v: &Value) -> Option<MergeTag> {
    match v {
        Value::Tagged(t) if t.tag == "reset" => Some(MergeTag::Reset),
        Value::Tagged(t) if t.tag == "override" => Some(MergeTag::Override),
        _ => None,
    }
}

/// A value with its merge tags applied: `!reset` parts gone (`None` for the value itself),
/// `!override` parts plain.
pub(super) fn strip_tags(v: Value) -> Option<Value> {
    match v {
        Value::Tagged(t) if t.tag == "reset" => None,
        Value::Tagged(t) if t.tag == "override" => strip_tags(t.value),
        Value::Mapping(m) => Some(Value::Mapping(
            m.into_iter()
                .filter_map(|(k, v)| strip_tags(v).map(|v| (k, v)))
                .collect(),
        )),
        Value::Sequence(seq) => Some(Value::Sequence(
            seq.into_iter().filter_map(strip_tags).collect(),
        )),
        other => Some(other),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_tab_in_the_indentation_is_named() {
        let text = "services:\n  api:\n\timage: x\n";
        let e = super::parse_yaml(std::path::Path::new("compose.yml"), text)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3 is indented with a tab"), "{e}");
    }
}
