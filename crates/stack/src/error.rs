//! The stack crate's error type: every variant names the file and the place in it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("cannot read `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: invalid YAML: {message}", path.display())]
    Yaml {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}: {at}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        at: String,
        message: String,
    },
    #[error("{}: {at}", path.display())]
    Interpolate {
        path: PathBuf,
        at: String,
        #[source]
        source: crate::interpolate::InterpolateError,
    },
    #[error("{}", path.display())]
    Dotenv {
        path: PathBuf,
        #[source]
        source: crate::dotenv::DotenvError,
    },
    #[error("circular `extends`: {}", chain.join(" -> "))]
    ExtendsCycle { chain: Vec<String> },
}

impl StackError {
    pub(crate) fn invalid(
        path: &std::path::Path,
        at: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        StackError::Invalid {
            path: path.to_path_buf(),
            at: at.into(),
            message: message.into(),
        }
    }
}

/// The closest candidate to `input` by edit distance, if it is close enough to be a typo.
pub fn did_you_mean<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (levenshtein(input, c), c))
        .filter(|(d, c)| *d <= (input.len().max(c.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        let names = ["postgres", "neo4j", "brain-api"];
        assert_eq!(did_you_mean("postgress", names), Some("postgres"));
        assert_eq!(did_you_mean("brain_api", names), Some("brain-api"));
        assert_eq!(did_you_mean("redis", names), None);
    }
}
