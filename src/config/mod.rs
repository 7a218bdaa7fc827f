//! Vars files: YAML with includes and `--var` overrides, validated into a
//! build plan (`Config`). Every error names file:line:col and the key path.
//!
//! Two stages, as in ripgrep: `RawVars` is what one file says (serde,
//! unknown keys rejected); `Config` is the merged, templated, validated
//! result the builders use.


use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml_ng::Value as Yaml;

use crate::template::{render_yaml, Templater};
use crate::yaml::{self, yaml_key, OneOrMany};

pub use crate::ConfigError;

/// Which program bootstraps the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Bootstrapper {
    /// mmdebstrap when installed, else debootstrap.
    #[default]
    Auto,
    Debootstrap,
    Mmdebstrap,
}

/// One vars file as written. Every key is optional; unknown keys are errors.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVars {
    pub name: Option<String>,
    pub include: Option<OneOrMany>,
    pub suite: Option<String>,
    pub variant: Option<String>,
    pub arch: Option<String>,
    pub components: Option<Vec<String>>,
    pub mirror: Option<String>,
    pub apt_proxy: Option<String>,
    pub bootstrapper: Option<Bootstrapper>,
    /// Packages installed at bootstrap time (`name` or `name=version`).
    pub packages: Option<Vec<String>>,
    /// Packages the bootstrapper must leave out.
    pub exclude: Option<Vec<String>>,
    /// Roles to run, in order.
    pub provisioners: Option<Vec<String>>,
    /// Where roles live (default: `provisioners/` beside the vars dir).
    pub provisioners_dir: Option<PathBuf>,
    /// Overlay/initrd: the basefs build name (or file) to build on.
    pub base: Option<String>,
    /// Overlay: parent overlays applied before this one, in order.
    pub parents: Option<Vec<String>>,
    /// squashfs writer options (compressor, level, block_size).
    pub squashfs: Option<Yaml>,
    /// Initrd: `basefs` (default) or a Debian kernel package name.
    pub kernel: Option<String>,
    /// Initrd: kernel modules to include (default: the lab NIC list).
    pub modules: Option<Vec<String>>,
    /// Initrd: include firmware the drivers declare.
    pub firmware: Option<bool>,
    /// Initrd/overlay compression options.
    pub compression: Option<Yaml>,
    /// Output naming (reserved): `{file: NAME}`.
    pub output: Option<Yaml>,
    /// Caches shared by builds: .debs and bootstrapped trees (default: OUT/.cache).
    pub cache_dir: Option<PathBuf>,
    /// Reuse a bootstrapped tree with the same inputs (default true).
    pub bootstrap_cache: Option<bool>,
    /// Clamp for every mtime in the images (SOURCE_DATE_EPOCH wins).
    pub source_date_epoch: Option<u64>,
    /// Extra paths (globs) removed from the tree before packing.
    pub cleanup: Option<Vec<String>>,
    /// Free-form role variables.
    pub vars: Option<BTreeMap<String, Yaml>>,
}

/// The merged, rendered, validated configuration of one build.
#[derive(Debug, Clone)]
pub struct Config {
    /// The vars file given on the command line.
    pub file: PathBuf,
    pub name: String,
    pub suite: String,
    pub variant: String,
    pub arch: String,
    pub components: Vec<String>,
    pub mirror: String,
    pub apt_proxy: Option<String>,
    pub bootstrapper: Bootstrapper,
    pub packages: Vec<String>,
    pub exclude: Vec<String>,
    pub provisioners: Vec<String>,
    pub provisioners_dir: PathBuf,
    pub base: Option<String>,
    pub parents: Vec<String>,
    pub squashfs: Option<Yaml>,
    pub kernel: Option<String>,
    pub modules: Option<Vec<String>>,
    pub firmware: bool,
    pub compression: Option<Yaml>,
    pub cache_dir: Option<PathBuf>,
    pub bootstrap_cache: bool,
    pub source_date_epoch: u64,
    pub cleanup: Vec<String>,
    /// Role variables, rendered.
    pub vars: BTreeMap<String, Yaml>,
    /// Every variable templates can see: top-level keys plus `vars`.
    pub context: minijinja::Value,
    /// Where each top-level key was last set, for errors after loading.
    pub origins: BTreeMap<String, PathBuf>,
}

/// Load a vars file with its includes, apply `--var` overrides, render
/// templates and validate.
pub fn load(path: &Path, overrides: &[String]) -> Result<Config, ConfigError> {
    let mut merged = Merged::default();
    let mut stack = Vec::new();
    merged.add_file(path, &mut stack)?;
    for item in overrides {
        merged.add_override(item)?;
    }
    merged.finish(path)
}

/// Accumulates files in include order; later keys win.
#[derive(Default)]
struct Merged {
    /// Top-level keys as YAML values, each with the file that set it.
    keys: BTreeMap<String, (Yaml, PathBuf)>,
    vars: BTreeMap<String, (Yaml, PathBuf)>,
    texts: BTreeMap<PathBuf, String>,
}

impl Merged {
    fn add_file(&mut self, path: &Path, stack: &mut Vec<PathBuf>) -> Result<(), ConfigError> {
        let canonical = path.canonicalize().map_err(|e| {
            let from = stack.last().map(|p| format!(" (included from {})", p.display())).unwrap_or_default();
            ConfigError(format!("{}: cannot read vars file: {e}{from}", path.display()))
        })?;
        if stack.contains(&canonical) {
            return Err(ConfigError(format!("{}: include cycle: {}", path.display(), chain(stack, &canonical))));
        }
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError(format!("{}: cannot read: {e}", path.display())))?;
        let raw: RawVars = yaml::parse(path, &text)?;
        // Typed parse above rejects unknown keys and bad types; the generic
        // parse below keeps the values for merging in order.
        let generic: BTreeMap<String, Yaml> = yaml::parse(path, &text)?;
        stack.push(canonical);
        let dir = path.parent().unwrap_or(Path::new("."));
        for inc in raw.include.as_ref().map(OneOrMany::to_vec).unwrap_or_default() {
            self.add_file(&dir.join(inc), stack)?;
        }
        stack.pop();
        for (key, value) in generic {
            match key.as_str() {
                "include" => {}
                "vars" => {
                    if let Yaml::Mapping(map) = value {
                        for (k, v) in map {
                            let k = yaml_key(&k);
                            self.vars.insert(k, (v, path.to_path_buf()));
                        }
                    }
                }
                _ => {
                    self.keys.insert(key, (value, path.to_path_buf()));
                }
            }
        }
        self.texts.insert(path.to_path_buf(), text);
        Ok(())
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
        let parsed: Yaml = serde_yaml_ng::from_str(value).unwrap_or_else(|_| Yaml::String(value.to_string()));
        let parsed = if parsed.is_null() && !value.trim().is_empty() { Yaml::String(value.into()) } else { parsed };
        let origin = PathBuf::from(format!("--var {key}"));
        if let Some(var) = key.strip_prefix("vars.") {
            self.vars.insert(var.to_string(), (parsed, origin));
        } else if TOP_LEVEL_KEYS.contains(&key) {
            self.keys.insert(key.to_string(), (parsed, origin));
        } else {
            self.vars.insert(key.to_string(), (parsed, origin));
        }
        Ok(())
    }

    fn finish(self, main: &Path) -> Result<Config, ConfigError> {
        // Re-check overridden keys against the typed schema.
        let mut map = serde_yaml_ng::Mapping::new();
        for (k, (v, _)) in &self.keys {
            map.insert(Yaml::String(k.clone()), v.clone());
        }
        let raw: RawVars = serde_yaml_ng::from_value(Yaml::Mapping(map.clone())).map_err(|e| {
            ConfigError(format!("{}: {e} (after applying includes and --var)", main.display()))
        })?;

        // The template context: raw top-level values and role vars; strings
        // may refer to each other, so rendering repeats until stable.
        let mut ctx_map: BTreeMap<String, Yaml> = self.keys.iter().map(|(k, (v, _))| (k.clone(), v.clone())).collect();
        for (k, (v, _)) in &self.vars {
            ctx_map.insert(k.clone(), v.clone());
        }
        for (key, default) in [("suite", "bookworm"), ("variant", "minbase"), ("arch", "amd64")] {
            ctx_map.entry(key.into()).or_insert_with(|| Yaml::String(default.into()));
        }
        if !ctx_map.get("mirror").is_some_and(|m| m.as_str().is_some_and(|s| !s.is_empty())) {
            let mirror = crate::apt::host_mirror().map_err(|e| ConfigError(e.to_string()))?;
            ctx_map.insert("mirror".into(), Yaml::String(mirror));
        }
        let templater = Templater::default();
        let mut rendered = ctx_map.clone();
        for _ in 0..4 {
            let ctx = minijinja::Value::from_serialize(&rendered);
            let mut next = BTreeMap::new();
            for (k, v) in &rendered {
                let origin = self.keys.get(k).or_else(|| self.vars.get(k)).map(|(_, p)| p.clone()).unwrap_or_default();
                let key_path = if self.vars.contains_key(k) && !self.keys.contains_key(k) {
                    vec!["vars".to_string(), k.clone()]
                } else {
                    vec![k.clone()]
                };
                next.insert(k.clone(), render_yaml(&templater, v, &ctx, &|sub: &[String]| {
                    self.place(&origin, &[key_path.clone(), sub.to_vec()].concat())
                })?);
            }
            if next == rendered {
                break;
            }
            rendered = next;
        }
        let get_str = |k: &str| rendered.get(k).and_then(|v| v.as_str().map(str::to_string));
        let get_list = |k: &str| -> Vec<String> {
            rendered.get(k).and_then(|v| serde_yaml_ng::from_value::<Vec<String>>(v.clone()).ok()).unwrap_or_default()
        };

        let name = get_str("name").ok_or_else(|| {
            ConfigError(format!("{}: no `name:` — every build needs a name (it names the artifact)", main.display()))
        })?;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) || name.starts_with('.') {
            let (origin, line) = self.origin_of("name");
            return Err(ConfigError(format!("{}{line}: name `{name}`: use letters, digits, `-`, `_` and `.` only (it becomes a file name)", origin.display())));
        }
        let mirror = get_str("mirror").unwrap_or_default();
        if !(mirror.starts_with("http://") || mirror.starts_with("https://") || mirror.starts_with("file:/")) {
            let (origin, line) = self.origin_of("mirror");
            return Err(ConfigError(format!("{}{line}: mirror `{mirror}` is not an http(s):// or file:/ URL", origin.display())));
        }
        let apt_proxy = get_str("apt_proxy").filter(|p| !p.is_empty());
        if let Some(p) = &apt_proxy {
            if !p.starts_with("http://") {
                let (origin, line) = self.origin_of("apt_proxy");
                return Err(ConfigError(format!("{}{line}: apt_proxy `{p}` must be an http:// URL such as http://127.0.0.1:3142", origin.display())));
            }
        }
        let provisioners_dir = match &raw.provisioners_dir {
            Some(d) => d.clone(),
            None => default_provisioners_dir(main),
        };
        let vars: BTreeMap<String, Yaml> =
            self.vars.keys().filter_map(|k| rendered.get(k).map(|v| (k.clone(), v.clone()))).collect();
        let mut context = rendered.clone();
        context.insert("name".into(), Yaml::String(name.clone()));
        context.insert("mirror".into(), Yaml::String(mirror.clone()));
        let suite = get_str("suite").unwrap_or_else(|| "bookworm".into());
        context.insert("suite".into(), Yaml::String(suite.clone()));
        Ok(Config {
            file: main.to_path_buf(),
            name,
            suite,
            variant: get_str("variant").unwrap_or_else(|| "minbase".into()),
            arch: get_str("arch").unwrap_or_else(|| "amd64".into()),
            components: Some(get_list("components")).filter(|c| !c.is_empty()).unwrap_or_else(|| vec!["main".into()]),
            mirror,
            apt_proxy,
            bootstrapper: raw.bootstrapper.unwrap_or_default(),
            packages: get_list("packages"),
            exclude: get_list("exclude"),
            provisioners: get_list("provisioners"),
            provisioners_dir,
            base: get_str("base"),
            parents: get_list("parents"),
            squashfs: rendered.get("squashfs").cloned(),
            kernel: get_str("kernel"),
            modules: rendered.get("modules").map(|_| get_list("modules")),
            firmware: raw.firmware.unwrap_or(true),
            compression: rendered.get("compression").cloned(),
            cache_dir: raw.cache_dir.clone(),
            bootstrap_cache: raw.bootstrap_cache.unwrap_or(true),
            source_date_epoch: crate::artifact::source_date_epoch(raw.source_date_epoch.unwrap_or(0)),
            cleanup: get_list("cleanup"),
            vars,
            context: minijinja::Value::from_serialize(&context),
            origins: self.keys.iter().map(|(k, (_, p))| (k.clone(), p.clone())).collect(),
        })
    }

    /// `FILE:LINE:COL` of a key path in the file that set it.
    fn place(&self, origin: &Path, key_path: &[String]) -> String {
        match self.texts.get(origin) {
            Some(text) => {
                let (line, col) = yaml::locate(text, key_path);
                format!("{}:{line}:{col}", origin.display())
            }
            None => origin.display().to_string(),
        }
    }

    fn origin_of(&self, key: &str) -> (PathBuf, String) {
        match self.keys.get(key) {
            Some((_, origin)) => {
                let place = self.place(origin, &[key.to_string()]);
                (PathBuf::from(place), String::new())
            }
            None => (PathBuf::from("config"), String::new()),
        }
    }
}

/// Every top-level key a vars file may use (kept in step with `RawVars`).
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "name", "include", "suite", "variant", "arch", "components", "mirror", "apt_proxy", "bootstrapper",
    "packages", "exclude", "provisioners", "provisioners_dir", "base", "parents", "squashfs", "kernel",
    "modules", "firmware", "compression", "output", "cache_dir", "bootstrap_cache", "source_date_epoch", "cleanup", "vars",
];

fn chain(stack: &[PathBuf], last: &Path) -> String {
    stack.iter().map(|p| p.display().to_string()).chain([last.display().to_string()]).collect::<Vec<_>>().join(" -> ")
}

/// `provisioners/` beside the vars file's directory, else `./provisioners`.
fn default_provisioners_dir(vars_file: &Path) -> PathBuf {
    let beside = vars_file.parent().and_then(Path::parent).map(|p| p.join("provisioners"));
    match beside {
        Some(dir) if dir.is_dir() => dir,
        _ => PathBuf::from("provisioners"),
    }
}

pub mod check;
pub use check::{check, CheckArgs};

#[cfg(test)]
mod tests;
