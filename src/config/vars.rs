//! Reading vars files: includes (relative to the including file, cycles
//! refused), later keys winning, `--var KEY=VALUE` winning over all, unknown
//! top-level keys refused with their place, and every string rendered as a
//! template over the others. What comes out still remembers where each key
//! was set, so the plan can name `FILE:LINE:COL` for a bad value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value as Yaml;

use super::keys;
use crate::template::{render_yaml, Templater};
use crate::yaml::{self, yaml_key, OneOrMany};
use crate::ConfigError;

/// Where a value was set.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// A vars file (absolute path).
    File(PathBuf),
    /// `--var KEY=…` on the command line (or a playbook's `var:`).
    Override(String),
}

/// A value and where it was set.
#[derive(Debug, Clone)]
pub struct Setting {
    pub value: Yaml,
    pub origin: Origin,
}

/// Every file of one build's config, merged.
#[derive(Debug, Default)]
pub struct Vars {
    /// The vars file named on the command line (absolute).
    pub main: PathBuf,
    /// Top-level keys (not `include`, not `vars`).
    pub keys: BTreeMap<String, Setting>,
    /// Role variables (`vars:` and `--var` names that are not keys).
    pub vars: BTreeMap<String, Setting>,
    /// The `--var` names given, in order.
    pub overrides: Vec<String>,
    /// Every file read, by absolute path, for locating keys.
    texts: BTreeMap<PathBuf, String>,
}

impl Vars {
    /// Read `main` and its includes, then apply the overrides.
    pub fn read(main: &Path, overrides: &[String]) -> Result<Vars, ConfigError> {
        let main = std::path::absolute(main)
            .map_err(|e| ConfigError(format!("{}: {e}", main.display())))?;
        let mut vars = Vars {
            main: main.clone(),
            ..Default::default()
        };
        vars.add_file(&main, &mut Vec::new())?;
        for item in overrides {
            vars.add_override(item)?;
        }
        Ok(vars)
    }

    fn add_file(&mut self, path: &Path, stack: &mut Vec<PathBuf>) -> Result<(), ConfigError> {
        let from = || {
            stack
                .last()
                .map(|p| format!(" (included from {})", p.display()))
                .unwrap_or_default()
        };
        let canonical = path.canonicalize().map_err(|e| {
            ConfigError(format!(
                "{}: cannot read vars file: {e}{}",
                path.display(),
                from()
            ))
        })?;
        if stack.contains(&canonical) {
            return Err(ConfigError(format!(
                "{}: include cycle: {}",
                path.display(),
                chain(stack, &canonical)
            )));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: cannot read: {e}{}", path.display(), from())))?;
        let map: BTreeMap<String, Yaml> = yaml::parse(path, &text)?;
        self.texts.insert(path.to_path_buf(), text);
        if let Some(key) = map.keys().find(|k| keys::get(k).is_none()) {
            let names = keys::KEYS.iter().map(|k| k.name);
            return Err(ConfigError(format!(
                "{}: unknown field `{key}`{} (top-level keys: {})",
                self.place(&Origin::File(path.to_path_buf()), std::slice::from_ref(key)),
                keys::hint(key, names.clone()),
                names.collect::<Vec<_>>().join(", ")
            )));
        }
        if let Some(inc) = map.get("include") {
            let includes: OneOrMany = serde_yaml_ng::from_value(inc.clone())
                .map_err(|_| self.bad(path, "include", "a file name or a list of them"))?;
            stack.push(canonical);
            let dir = path.parent().unwrap_or(Path::new("/"));
            for inc in includes.to_vec() {
                self.add_file(&dir.join(inc), stack)?;
            }
            stack.pop();
        }
        let origin = Origin::File(path.to_path_buf());
        for (key, value) in map {
            match key.as_str() {
                "include" => {}
                "vars" => {
                    let Yaml::Mapping(map) = value else {
                        return Err(self.bad(
                            path,
                            "vars",
                            "a mapping of variable names to values",
                        ));
                    };
                    for (k, v) in map {
                        self.vars.insert(
                            yaml_key(&k),
                            Setting {
                                value: v,
                                origin: origin.clone(),
                            },
                        );
                    }
                }
                _ => {
                    self.keys.insert(
                        key,
                        Setting {
                            value,
                            origin: origin.clone(),
                        },
                    );
                }
            }
        }
        Ok(())
    }

    fn bad(&self, path: &Path, key: &str, want: &str) -> ConfigError {
        ConfigError(format!(
            "{}: `{key}` must be {want}",
            self.place(&Origin::File(path.to_path_buf()), &[key.to_string()])
        ))
    }

    /// `key=value`: a top-level key, `vars.key`, or (any other name) a role
    /// variable. The value is read as YAML (`[a, b]`, `3`, `true`, text).
    fn add_override(&mut self, item: &str) -> Result<(), ConfigError> {
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| ConfigError(format!("--var {item}: expected KEY=VALUE")))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(ConfigError(format!("--var {item}: empty key")));
        }
        let parsed: Yaml =
            serde_yaml_ng::from_str(value).unwrap_or_else(|_| Yaml::String(value.to_string()));
        let parsed = if parsed.is_null() && !value.trim().is_empty() {
            Yaml::String(value.into())
        } else {
            parsed
        };
        let setting = Setting {
            value: parsed,
            origin: Origin::Override(key.to_string()),
        };
        self.overrides.push(key.to_string());
        match key.strip_prefix("vars.") {
            Some(var) => {
                self.vars.insert(var.to_string(), setting);
            }
            None if key == "include" || key == "vars" => {
                return Err(ConfigError(format!(
                    "--var {key}=…: `{key}` cannot be set from the command line"
                )))
            }
            None if keys::get(key).is_some() => {
                self.keys.insert(key.to_string(), setting);
            }
            None => {
                self.vars.insert(key.to_string(), setting);
            }
        }
        Ok(())
    }

    /// `FILE:LINE:COL` of a key path where it was set, or `--var KEY`.
    pub fn place(&self, origin: &Origin, key_path: &[String]) -> String {
        match origin {
            Origin::Override(key) => format!("--var {key}"),
            Origin::File(path) => match self.texts.get(path) {
                Some(text) => {
                    let (line, col) = yaml::locate(text, key_path);
                    format!("{}:{line}:{col}", path.display())
                }
                None => path.display().to_string(),
            },
        }
    }

    /// The place of a top-level key (or of a role variable, under `vars:`).
    pub fn place_of(&self, key_path: &[&str]) -> String {
        let path: Vec<String> = key_path.iter().map(|s| s.to_string()).collect();
        let Some(first) = key_path.first() else {
            return self.main.display().to_string();
        };
        if let Some(s) = self.keys.get(*first) {
            return self.place(&s.origin, &path);
        }
        if let Some(s) = self.vars.get(*first) {
            let under_vars: Vec<String> = std::iter::once("vars".to_string()).chain(path).collect();
            return match &s.origin {
                Origin::File(_) => self.place(&s.origin, &under_vars),
                o => self.place(o, &[]),
            };
        }
        self.main.display().to_string()
    }

    /// Every value as a template context (top-level keys and role
    /// variables), rendered until stable: strings may use each other.
    pub fn render(&self, defaults: &[(&str, Yaml)]) -> Result<BTreeMap<String, Yaml>, ConfigError> {
        let mut ctx: BTreeMap<String, Yaml> = self
            .keys
            .iter()
            .map(|(k, s)| (k.clone(), s.value.clone()))
            .collect();
        for (k, s) in &self.vars {
            ctx.insert(k.clone(), s.value.clone());
        }
        for (key, value) in defaults {
            ctx.entry(key.to_string()).or_insert_with(|| value.clone());
        }
        let templater = Templater::default();
        let mut rendered = ctx;
        for _ in 0..4 {
            let context = minijinja::Value::from_serialize(&rendered);
            let mut next = BTreeMap::new();
            for (k, v) in &rendered {
                let place = |sub: &[String]| {
                    let path: Vec<&str> = std::iter::once(k.as_str())
                        .chain(sub.iter().map(String::as_str))
                        .collect();
                    self.place_of(&path)
                };
                next.insert(k.clone(), render_yaml(&templater, v, &context, &place)?);
            }
            if next == rendered {
                break;
            }
            rendered = next;
        }
        Ok(rendered)
    }
}

fn chain(stack: &[PathBuf], last: &Path) -> String {
    stack
        .iter()
        .map(|p| p.display().to_string())
        .chain([last.display().to_string()])
        .collect::<Vec<_>>()
        .join(" -> ")
}
