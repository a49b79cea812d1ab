//! `.env` files as Compose reads them: `KEY=value` lines, `#` comments, optional `export`,
//! single quotes (literal), double quotes (escapes, interpolation) and unquoted values
//! (trimmed, ` #` starts a comment, interpolation against what is defined so far).

use std::path::Path;

use indexmap::IndexMap;

use crate::error::StackError;
use crate::interpolate::{Vars, interpolate};
use crate::model::Service;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct DotenvError {
    pub line: usize,
    pub reason: String,
}

/// Parses `text`; `outer` are variables already known (the process environment), used for
/// interpolation in values but not returned.
pub fn parse(text: &str, outer: &Vars) -> Result<Vars, DotenvError> {
    let mut out = Vars::new();
    let mut lines = text.lines().enumerate();
    while let Some((idx, raw)) = lines.next() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let err = |reason: String| DotenvError {
            line: idx + 1,
            reason,
        };
        let Some((key, value)) = line.split_once('=') else {
            // A bare name is allowed by Compose: it takes the value from the environment.
            if line.chars().all(|c| c == '_' || c.is_ascii_alphanumeric()) {
                if let Some(v) = outer.get(line) {
                    out.insert(line.to_string(), v.clone());
                }
                continue;
            }
            return Err(err(format!("expected `KEY=value`, found `{line}`")));
        };
        let key = key.trim();
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c == '_' || c == '.' || c == '-' || c.is_ascii_alphanumeric())
        {
            return Err(err(format!("invalid variable name `{key}`")));
        }
        let value = value.trim_start();
        let lookup = |out: &Vars| {
            let mut all = outer.clone();
            for (k, v) in out {
                all.entry(k.clone()).or_insert_with(|| v.clone());
            }
            all
        };
        let parsed = if let Some(rest) = value.strip_prefix('\'') {
            let mut body = rest.to_string();
            while !body.contains('\'') {
                let (_, next) = lines
                    .next()
                    .ok_or_else(|| err("single quote is never closed".into()))?;
                body.push('\n');
                body.push_str(next);
            }
            let end = body.find('\'').unwrap_or(body.len());
            body[..end].to_string()
        } else if let Some(rest) = value.strip_prefix('"') {
            let mut body = rest.to_string();
            while closing_double_quote(&body).is_none() {
                let (_, next) = lines
                    .next()
                    .ok_or_else(|| err("double quote is never closed".into()))?;
                body.push('\n');
                body.push_str(next);
            }
            let end = closing_double_quote(&body).unwrap_or(body.len());
            let unescaped = unescape(&body[..end]);
            interpolate(&unescaped, &lookup(&out)).map_err(|e| err(e.to_string()))?
        } else {
            let v = match value.find(" #") {
                Some(p) => &value[..p],
                None => value,
            };
            interpolate(v.trim_end(), &lookup(&out)).map_err(|e| err(e.to_string()))?
        };
        out.insert(key.to_string(), parsed);
    }
    Ok(out)
}

/// A service's environment as Compose gives it to the container: its `env_file`s in order
/// (each value interpolated against the files before it, then the project's variables), then
/// its `environment`, which wins. A missing file is an error unless it is `required: false`.
pub fn service_environment(
    svc: &Service,
    project_dir: &Path,
    vars: &Vars,
) -> Result<IndexMap<String, Option<String>>, StackError> {
    let mut from_files = Vars::new();
    for (file, required) in &svc.env_files {
        let path = project_dir.join(file);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(StackError::Read { path, source }),
        };
        let mut outer = vars.clone();
        for (k, v) in &from_files {
            outer.insert(k.clone(), v.clone());
        }
        let parsed = parse(&text, &outer).map_err(|source| StackError::Dotenv {
            path: path.clone(),
            source,
        })?;
        from_files.extend(parsed);
    }
    let mut env: IndexMap<String, Option<String>> =
        from_files.into_iter().map(|(k, v)| (k, Some(v))).collect();
    for (k, v) in &svc.environment {
        // a bare name the environment does not set leaves an env file's value alone
        if v.is_some() || !env.contains_key(k) {
            env.insert(k.clone(), v.clone());
        }
    }
    Ok(env)
}

fn closing_double_quote(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_forms_compose_reads() {
        let text = r#"
# comment
A=1
export B = two
C='single $A'
D="double ${A}\nline"
E=plain # trailing comment
F=${A}-x
G=
H="multi
line"
"#;
        let v = parse(text, &Vars::new()).unwrap();
        assert_eq!(v["A"], "1");
        assert_eq!(v["B"], "two");
        assert_eq!(v["C"], "single $A");
        assert_eq!(v["D"], "double 1\nline");
        assert_eq!(v["E"], "plain");
        assert_eq!(v["F"], "1-x");
        assert_eq!(v["G"], "");
        assert_eq!(v["H"], "multi\nline");
    }

    #[test]
    fn reports_the_line() {
        let e = parse("A=1\nnot a pair\n", &Vars::new()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 2: expected `KEY=value`, found `not a pair`"
        );
    }
}
