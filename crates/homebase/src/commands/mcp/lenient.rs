//! Tool arguments as clients send them. The published schemas type an optional number as
//! `integer` and a flag as `boolean`, yet form-based clients (the MCP Inspector among them)
//! send what the user typed as a string: `"3"`, `"true"`. Both are taken; an empty string
//! is "left out".

use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

#[derive(Deserialize)]
#[serde(untagged)]
enum Given<T> {
    Value(T),
    Text(String),
}

/// An optional number or flag, given as itself or as text.
pub fn opt<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + FromStr,
{
    match Option::<Given<T>>::deserialize(d)? {
        None => Ok(None),
        Some(Given::Value(v)) => Ok(Some(v)),
        Some(Given::Text(s)) if s.trim().is_empty() => Ok(None),
        Some(Given::Text(s)) => s.trim().parse().map(Some).map_err(|_| {
            D::Error::custom(format!(
                "`{}` is not a {}",
                s.escape_debug(),
                std::any::type_name::<T>()
                    .replace("u32", "whole number")
                    .replace("u64", "whole number")
                    .replace("bool", "true or false")
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize, Debug, PartialEq)]
    struct In {
        #[serde(default, deserialize_with = "super::opt")]
        n: Option<u32>,
        #[serde(default, deserialize_with = "super::opt")]
        b: Option<bool>,
    }

    #[test]
    fn numbers_and_flags_come_as_themselves_or_as_text() {
        let p = |s: &str| serde_json::from_str::<In>(s);
        assert_eq!(
            p(r#"{"n": 3, "b": true}"#).unwrap(),
            In {
                n: Some(3),
                b: Some(true)
            }
        );
        assert_eq!(
            p(r#"{"n": "3", "b": "true"}"#).unwrap(),
            In {
                n: Some(3),
                b: Some(true)
            }
        );
        assert_eq!(
            p(r#"{"n": "", "b": null}"#).unwrap(),
            In { n: None, b: None }
        );
        assert_eq!(p("{}").unwrap(), In { n: None, b: None });
        let e = p(r#"{"n": "three"}"#).unwrap_err().to_string();
        assert!(e.contains("`three` is not a whole number"), "{e}");
        assert!(p(r#"{"n": -1}"#).is_err());
    }
}
