//! Reading YAML files into typed structs with errors that name the file,
//! line, column and key path, and finding where a key sits in a file (for
//! errors found after parsing, such as a template that fails to render).

use std::path::Path;

use serde::de::DeserializeOwned;

use serde::Deserialize;
use serde_yaml_ng::Value as Yaml;

use crate::ConfigError;

/// Parse `text` (the contents of `path`) as a `T`.
pub fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    if text.trim().is_empty() {
        return Err(ConfigError(format!(
            "{}: the file is empty",
            path.display()
        )));
    }
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let key = err.path().to_string();
        let inner = err.into_inner();
        let (line, col) = inner
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        let mut message = strip_location(&inner.to_string());
        // serde_yaml_ng starts some messages with its own path (`.[0]: …`).
        if message.starts_with(['.', '[']) {
            if let Some((_, rest)) = message.split_once(": ") {
                message = rest.to_string();
            }
        }
        let at_key = if key.is_empty() || key == "." {
            String::new()
        } else {
            format!(" (at key `{key}`)")
        };
        ConfigError(format!(
            "{}:{line}:{col}: {message}{at_key}",
            path.display()
        ))
    })
}

/// Read and parse a file.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("{}: cannot read: {e}", path.display())))?;
    parse(path, &text)
}

/// serde_yaml_ng appends " at line L column C"; we print it in front.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// The 1-based (line, column) of a key path like `["vars", "hostname"]` or
/// `["packages", "2"]` in a YAML file's text: the line of the last key found
/// while walking down by indentation. A best effort for errors raised after
/// parsing; (0, 0) when the key cannot be found.
pub fn locate(text: &str, path: &[String]) -> (usize, usize) {
    let mut found = (0, 0);
    let mut depth = 0;
    let mut min_indent: Option<usize> = None;
    let mut seq_index = 0usize;
    for (n, raw) in text.lines().enumerate() {
        if depth == path.len() {
            break;
        }
        let indent = raw.len() - raw.trim_start().len();
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(min) = min_indent {
            if indent < min {
                break; // left the mapping we were walking into
            }
        }
        let want = &path[depth];
        if let Ok(index) = want.parse::<usize>() {
            if line.starts_with("- ") || line == "-" {
                if seq_index == index {
                    found = (n + 1, indent + 1);
                    depth += 1;
                    min_indent = Some(indent + 1);
                    seq_index = 0;
                } else {
                    seq_index += 1;
                }
            }
            continue;
        }
        let key_part = line.trim_start_matches("- ");
        if let Some((key, _)) = key_part.split_once(':') {
            if key.trim().trim_matches(['"', '\'']) == want {
                found = (n + 1, indent + 1 + (line.len() - key_part.len()));
                depth += 1;
                min_indent = Some(indent + 1);
                seq_index = 0;
            }
        }
    }
    found
}

/// A string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// A mapping key as text (non-string keys in their YAML spelling).
pub fn yaml_key(k: &Yaml) -> String {
    match k {
        Yaml::String(s) => s.clone(),
        other => serde_yaml_ng::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Small {
        name: String,
        packages: Option<Vec<String>>,
    }

    #[test]
    fn unknown_key_names_file_line_col() {
        let err = parse::<Small>(Path::new("v.yml"), "name: x\npackges: [a]\n").unwrap_err();
        assert!(
            err.0.starts_with("v.yml:2:1: unknown field `packges`"),
            "{}",
            err.0
        );
    }

    #[test]
    fn syntax_error_names_position() {
        let err = parse::<Small>(Path::new("v.yml"), "name: x\npackages: [a\n").unwrap_err();
        assert!(err.0.starts_with("v.yml:"), "{}", err.0);
        assert!(!err.0.starts_with("v.yml:0:0"), "{}", err.0);
    }

    #[test]
    fn type_error_names_key() {
        let err = parse::<Small>(Path::new("v.yml"), "name: x\npackages: 3\n").unwrap_err();
        assert!(err.0.contains("`packages`"), "{}", err.0);
    }

    #[test]
    fn locate_nested_keys() {
        let text = "name: a\nvars:\n  # c\n  hostname: \"{{ x }}\"\nlist:\n  - a\n  - b\n";
        assert_eq!(locate(text, &["vars".into(), "hostname".into()]), (4, 3));
        assert_eq!(locate(text, &["list".into(), "1".into()]), (7, 3));
        assert_eq!(locate(text, &["nothere".into()]), (0, 0));
    }
}
