//! Compose variable interpolation: `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
//! `${VAR:?error}`, `${VAR?error}`, `${VAR:+alt}`, `${VAR+alt}` and `$$`, with nesting in the
//! default, error and alternative parts.

use indexmap::IndexMap;

/// Variables visible to interpolation: the process environment over the `.env` file.
pub type Vars = IndexMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpolateError {
    #[error("required variable `{name}` is not set: {message}")]
    Required { name: String, message: String },
    #[error("invalid interpolation in `{text}`: {reason}")]
    Syntax { text: String, reason: String },
}

/// Replaces every variable reference in `text`.
pub fn interpolate(text: &str, vars: &Vars) -> Result<String, InterpolateError> {
    if !text.contains('$') {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if after.starts_with('{') {
            let end = matching_brace(after).ok_or_else(|| InterpolateError::Syntax {
                text: text.to_string(),
                reason: "a `${` has no closing `}`".into(),
            })?;
            out.push_str(&braced(&after[1..end], text, vars)?);
            rest = &after[end + 1..];
        } else {
            let len = name_len(after);
            if len == 0 {
                // A lone `$` (e.g. "costs $5") is kept, as Compose keeps it.
                out.push('$');
                rest = after;
            } else {
                if let Some(v) = vars.get(&after[..len]) {
                    out.push_str(v);
                }
                rest = &after[len..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The names of the variables `text` refers to (`$A`, `${B}`, `${C:-${D}}`), in order, each
/// once; `$$` is no reference.
pub fn referenced(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            rest = stripped;
            continue;
        }
        let body = after.strip_prefix('{').unwrap_or(after);
        let len = name_len(body);
        if len > 0 && !out.iter().any(|n| n == &body[..len]) {
            out.push(body[..len].to_string());
        }
        rest = &body[len..];
    }
    out
}

/// Escapes `$` so that Compose reads the text back unchanged.
pub fn escape(text: &str) -> String {
    text.replace('$', "$$")
}

fn name_len(s: &str) -> usize {
    let mut len = 0;
    for (i, c) in s.char_indices() {
        let ok = c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit());
        if !ok {
            break;
        }
        len = i + c.len_utf8();
    }
    len
}

/// Index of the `}` closing the `{` at the start of `s`, counting nested `${`.
fn matching_brace(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

fn braced(inner: &str, whole: &str, vars: &Vars) -> Result<String, InterpolateError> {
    let len = name_len(inner);
    if len == 0 {
        return Err(InterpolateError::Syntax {
            text: whole.to_string(),
            reason: format!("`${{{inner}}}` does not start with a variable name"),
        });
    }
    let name = &inner[..len];
    let op = &inner[len..];
    let value = vars.get(name);
    let set = value.is_some();
    let non_empty = value.is_some_and(|v| !v.is_empty());
    let current = || value.cloned().unwrap_or_default();
    let (operator, arg) = [":-", ":?", ":+", "-", "?", "+"]
        .iter()
        .find_map(|o| op.strip_prefix(o).map(|a| (*o, a)))
        .unwrap_or((op, ""));
    match operator {
        "" => Ok(current()),
        ":-" => {
            if non_empty {
                Ok(current())
            } else {
                interpolate(arg, vars)
            }
        }
        "-" => {
            if set {
                Ok(current())
            } else {
                interpolate(arg, vars)
            }
        }
        ":?" | "?" => {
            let ok = if operator == ":?" { non_empty } else { set };
            if ok {
                Ok(current())
            } else {
                let message = interpolate(arg, vars)?;
                Err(InterpolateError::Required {
                    name: name.to_string(),
                    message: if message.is_empty() {
                        "set it in the environment or the .env file".into()
                    } else {
                        message
                    },
                })
            }
        }
        ":+" => {
            if non_empty {
                interpolate(arg, vars)
            } else {
                Ok(String::new())
            }
        }
        "+" => {
            if set {
                interpolate(arg, vars)
            } else {
                Ok(String::new())
            }
        }
        other => Err(InterpolateError::Syntax {
            text: whole.to_string(),
            reason: format!("unknown operator `{other}` after `{name}`"),
        }),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn references_are_listed_once_with_nesting_and_escapes() {
        assert_eq!(
            super::referenced("postgres://app:${DB_PASS}@db/$DB_NAME ${X:-${Y}} $$NOT ${DB_PASS}"),
            ["DB_PASS", "DB_NAME", "X", "Y"]
        );
        assert!(super::referenced("costs $5").is_empty());
    }

    use super::*;

    fn vars() -> Vars {
        [("SET", "v"), ("EMPTY", ""), ("PORT", "5432")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn i(s: &str) -> String {
        interpolate(s, &vars()).unwrap()
    }

    #[test]
    fn plain_and_braced() {
        assert_eq!(i("a $SET b"), "a v b");
        assert_eq!(i("${SET}x"), "vx");
        assert_eq!(i("$UNSET."), ".");
        assert_eq!(i("${PORT}:5432"), "5432:5432");
        assert_eq!(i("cost $5"), "cost $5");
    }

    #[test]
    fn defaults() {
        assert_eq!(i("${UNSET:-d}"), "d");
        assert_eq!(i("${EMPTY:-d}"), "d");
        assert_eq!(i("${EMPTY-d}"), "");
        assert_eq!(i("${UNSET-d}"), "d");
        assert_eq!(i("${SET:-d}"), "v");
        assert_eq!(i("${UNSET:-${SET}}"), "v");
        assert_eq!(i("${UNSET:-${ALSO:-deep}}"), "deep");
        assert_eq!(i("${UNSET:-a:b}"), "a:b");
    }

    #[test]
    fn alternatives() {
        assert_eq!(i("${SET:+alt}"), "alt");
        assert_eq!(i("${EMPTY:+alt}"), "");
        assert_eq!(i("${EMPTY+alt}"), "alt");
        assert_eq!(i("${UNSET+alt}"), "");
    }

    #[test]
    fn required() {
        assert_eq!(i("${SET:?boom}"), "v");
        assert_eq!(i("${EMPTY?boom}"), "");
        let e = interpolate("${DB_PASSWORD:?set a database password}", &vars()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "required variable `DB_PASSWORD` is not set: set a database password"
        );
        assert!(interpolate("${EMPTY:?x}", &vars()).is_err());
    }

    #[test]
    fn dollar_dollar_escapes() {
        assert_eq!(i("$$SET"), "$SET");
        assert_eq!(i("a$$"), "a$");
        assert_eq!(escape("$SET"), "$$SET");
        assert_eq!(i(&escape("pa$$word ${x}")), "pa$$word ${x}");
    }

    #[test]
    fn syntax_errors() {
        assert!(interpolate("${SET", &vars()).is_err());
        assert!(interpolate("${}", &vars()).is_err());
        assert!(interpolate("${SET/x}", &vars()).is_err());
    }
}
