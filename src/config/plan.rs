//! The validated plan of one build: every value typed and range-checked,
//! every path absolute, before anything is bootstrapped or run. A bad value
//! is a `ConfigError` naming `FILE:LINE:COL`, the key and the fix.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_yaml_ng::Value as Yaml;

use super::initrd::{Compression, FirmwareSource, InitDefaults};
pub use super::keys::Kind;
use super::modules::{pattern_problem, ModuleKeys, ModuleSelection};
use super::vars::{Origin, Vars};
use crate::archive::squashfs::SquashfsOptions;
use crate::ConfigError;

/// `suite:` when a build does not say.
pub const DEFAULT_SUITE: &str = "bookworm";
/// `variant:` when a build does not say.
pub const DEFAULT_VARIANT: &str = "minbase";
/// `arch:` when a build does not say.
pub const DEFAULT_ARCH: &str = "amd64";

/// The defaults templates see (`{{ suite }}`…) when the vars do not set
/// them: the same values the plan falls back to.
pub const TEMPLATE_DEFAULTS: [(&str, &str); 3] = [
    ("suite", DEFAULT_SUITE),
    ("variant", DEFAULT_VARIANT),
    ("arch", DEFAULT_ARCH),
];

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

/// Where a build's working dir (`OUT/.work/NAME.*`) keeps what it makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BuildDir {
    /// In RAM (a tmpfs) when the machine has [`RAM_BUILD_MIN`] available,
    /// else on disk.
    #[default]
    Auto,
    Ram,
    Disk,
}

/// What `build_dir: auto` needs available to work in RAM: a default play's
/// build dir peaked at 681 MiB, and the tmpfs is capped at half of what is
/// available, so a build does not run the machine out of memory.
pub const RAM_BUILD_MIN: u64 = 4 << 30;

/// Where the initrd's kernel comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum KernelChoice {
    /// The kernel in the basefs the initrd is built for.
    Basefs,
    /// A Debian kernel package, e.g. `linux-image-amd64`.
    Package(String),
}

/// What only an initrd build uses.
#[derive(Debug, Clone)]
pub struct InitrdPlan {
    pub kernel: KernelChoice,
    /// `None`: the default lab NIC list.
    pub modules: Option<Vec<String>>,
    pub firmware: FirmwareSource,
    pub compression: Compression,
    pub init_template: PathBuf,
    pub defaults: InitDefaults,
}

/// One build, validated.
#[derive(Debug, Clone)]
pub struct Plan {
    pub kind: Kind,
    /// The vars file given on the command line (absolute).
    pub file: PathBuf,
    pub name: String,
    /// Where artifacts go and inputs are found (absolute).
    pub out: PathBuf,
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
    pub squashfs: SquashfsOptions,
    /// The basefs's kernel modules (`kernel_modules:`).
    pub kernel_modules: ModuleSelection,
    /// Overlays' gzip level.
    pub gzip_level: u32,
    pub initrd: InitrdPlan,
    /// `.deb`s, bootstrapped trees and the private apt (absolute).
    pub cache_dir: PathBuf,
    pub bootstrap_cache: bool,
    pub build_dir: BuildDir,
    pub source_date_epoch: u64,
    pub cleanup: Vec<String>,
    /// `lock:`: the lock file pinning every package (absolute; may not exist yet).
    pub lock: Option<PathBuf>,
    /// Role variables, rendered.
    pub vars: BTreeMap<String, Yaml>,
    /// Every variable templates can see: top-level keys plus `vars`.
    pub context: minijinja::Value,
}

impl Plan {
    /// The shared `.deb` cache.
    pub fn package_cache(&self) -> PathBuf {
        self.cache_dir.join("debs")
    }

    /// The shared apt package lists for this plan's sources
    /// (`CACHE/apt-lists/KEY`), bind-mounted over the tree's
    /// `/var/lib/apt/lists` by the bootstrap and the roles' chroots, never
    /// in the tree. KEY names what decides the lists: the mirror, suite,
    /// components and arch, and whether a lock's local repository is a
    /// source too; a basefs and the overlays on it agree on it.
    pub fn apt_lists(&self, local_repo: bool) -> PathBuf {
        let text = format!(
            "{}\n{}\n{}\n{}\nlocal repo: {local_repo}",
            self.mirror.trim_end_matches('/'),
            self.suite,
            self.components.join(","),
            self.arch
        );
        let key = crate::artifact::sha256_bytes(text.as_bytes());
        self.cache_dir.join(APT_LISTS).join(&key[..16])
    }
}

/// The shared apt package lists' dir under the cache dir.
pub const APT_LISTS: &str = "apt-lists";

/// Reads typed values out of the rendered config, naming the place of a bad one.
struct Reader<'a> {
    vars: &'a Vars,
    rendered: &'a BTreeMap<String, Yaml>,
}

impl Reader<'_> {
    fn err(&self, key: &[&str], why: impl std::fmt::Display) -> ConfigError {
        ConfigError(format!(
            "{}: {}: {why}",
            self.vars.place_of(key),
            key.join(".")
        ))
    }

    fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ConfigError> {
        let Some(value) = self.rendered.get(key) else {
            return Ok(None);
        };
        serde_path_to_error::deserialize(value.clone())
            .map(Some)
            .map_err(|e| {
                let inner: Vec<String> = e
                    .path()
                    .iter()
                    .map(|s| s.to_string())
                    .filter(|s| s != "?")
                    .collect();
                let mut path = vec![key];
                path.extend(inner.iter().map(String::as_str));
                let message = e.into_inner().to_string();
                self.err(&path, message)
            })
    }

    fn string(&self, key: &str, default: &str) -> Result<String, ConfigError> {
        Ok(self
            .get::<String>(key)?
            .unwrap_or_else(|| default.to_string()))
    }

    fn list(&self, key: &str) -> Result<Vec<String>, ConfigError> {
        Ok(self.get::<Vec<String>>(key)?.unwrap_or_default())
    }

    /// Check every item of a list against a predicate.
    fn each(
        &self,
        key: &str,
        items: &[String],
        ok: impl Fn(&str) -> bool,
        what: &str,
    ) -> Result<(), ConfigError> {
        match items.iter().position(|i| !ok(i)) {
            Some(i) => Err(self.err(
                &[key, &i.to_string()],
                format!("`{}` is not {what}", items[i]),
            )),
            None => Ok(()),
        }
    }

    /// A list whose every item `ok` accepts.
    fn checked_list(
        &self,
        key: &str,
        ok: impl Fn(&str) -> bool,
        what: &str,
    ) -> Result<Vec<String>, ConfigError> {
        let items = self.list(key)?;
        self.each(key, &items, ok, what)?;
        Ok(items)
    }

    /// A path: relative to the file that set it, or to the current directory
    /// for a `--var`.
    fn path(&self, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        let Some(p) = self.get::<PathBuf>(key)? else {
            return Ok(None);
        };
        let base = match self.vars.keys.get(key).map(|s| &s.origin) {
            Some(Origin::File(f)) => f.parent().map(Path::to_path_buf).unwrap_or_default(),
            _ => std::env::current_dir().map_err(|e| self.err(&[key], e))?,
        };
        Ok(Some(base.join(p)))
    }
}

const VARIANTS: &[&str] = &[
    "minbase",
    "buildd",
    "important",
    "required",
    "standard",
    "essential",
    "apt",
    "custom",
    "extract",
    "fakechroot",
];

fn is_package(s: &str) -> bool {
    let (name, version) = s.split_once('=').map_or((s, None), |(n, v)| (n, Some(v)));
    let name_ok = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
    name_ok
        && version.is_none_or(|v| {
            !v.is_empty()
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".+~:-".contains(c))
        })
}

fn is_word(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
}

/// Validate the merged, rendered config of one build.
pub fn build(
    vars: &Vars,
    rendered: &BTreeMap<String, Yaml>,
    kind: Kind,
    out: &Path,
) -> Result<Plan, ConfigError> {
    let r = Reader { vars, rendered };
    let name = checked_name(&r)?;
    let (mirror, apt_proxy) = mirror(&r)?;
    let (suite, variant, arch) = release(&r)?;
    let mut components = r.list("components")?;
    if components.is_empty() {
        components = vec!["main".into()];
    }
    let what = "an archive component such as main";
    r.each("components", &components, is_word, what)?;
    let packages = r.checked_list("packages", is_package, "a package name (or name=version)")?;
    let exclude = r.checked_list(
        "exclude",
        |p| is_package(p) && !p.contains('='),
        "a package name",
    )?;
    let provisioners = r.checked_list(
        "provisioners",
        |p| !p.is_empty() && !p.contains('/') && !p.starts_with('.'),
        "a role (a directory name)",
    )?;
    let cleanup = r.checked_list(
        "cleanup",
        |p| !p.split('/').any(|c| c == ".."),
        "a path inside the image (no `..`)",
    )?;
    let provisioners_dir = match r.path("provisioners_dir")? {
        Some(p) => p,
        None => in_project(vars, "provisioners")?,
    };
    let source_date_epoch =
        crate::artifact::source_date_epoch(r.get::<u64>("source_date_epoch")?.unwrap_or(0));
    let (gzip_level, compression) = compression(&r, kind)?;
    let vars_only: BTreeMap<String, Yaml> = vars
        .vars
        .keys()
        .filter_map(|k| rendered.get(k).map(|v| (k.clone(), v.clone())))
        .collect();
    let mut context = rendered.clone();
    context.insert("name".into(), Yaml::String(name.clone()));
    Ok(Plan {
        kind,
        file: vars.main.clone(),
        name,
        out: out.to_path_buf(),
        suite,
        variant,
        arch,
        components,
        mirror,
        apt_proxy,
        bootstrapper: r.get("bootstrapper")?.unwrap_or_default(),
        packages,
        exclude,
        provisioners,
        provisioners_dir,
        base: r.get("base")?,
        parents: r.list("parents")?,
        squashfs: squashfs_options(&r, source_date_epoch)?,
        kernel_modules: kernel_modules(&r)?,
        gzip_level,
        initrd: initrd_plan(&r, kind, compression)?,
        cache_dir: r.path("cache_dir")?.unwrap_or_else(|| out.join(".cache")),
        bootstrap_cache: r.get("bootstrap_cache")?.unwrap_or(true),
        build_dir: r.get("build_dir")?.unwrap_or_default(),
        source_date_epoch,
        cleanup,
        lock: r.path("lock")?,
        vars: vars_only,
        context: minijinja::Value::from_serialize(&context),
    })
}

/// `name:`, present and usable as a file name.
fn checked_name(r: &Reader) -> Result<String, ConfigError> {
    let name = r.get::<String>("name")?.ok_or_else(|| {
        ConfigError(format!(
            "{}: no `name:` — every build needs a name (it names the artifact)",
            r.vars.main.display()
        ))
    })?;
    if name.is_empty()
        || name.starts_with('.')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        let place = r.vars.place_of(&["name"]);
        return Err(ConfigError(format!("{place}: name `{name}`: use letters, digits, `-`, `_` and `.` only (it becomes a file name)")));
    }
    Ok(name)
}

/// `mirror:` and `apt_proxy:`, checked as URLs.
fn mirror(r: &Reader) -> Result<(String, Option<String>), ConfigError> {
    let mirror = r.string("mirror", "")?;
    if !(mirror.starts_with("http://")
        || mirror.starts_with("https://")
        || mirror.starts_with("file:/"))
    {
        return Err(r.err(
            &["mirror"],
            format!("`{mirror}` is not an http(s):// or file:/ URL"),
        ));
    }
    let apt_proxy = r.get::<String>("apt_proxy")?.filter(|p| !p.is_empty());
    if let Some(p) = apt_proxy.as_ref().filter(|p| !p.starts_with("http://")) {
        return Err(r.err(
            &["apt_proxy"],
            format!("`{p}` must be an http:// URL such as http://127.0.0.1:3142"),
        ));
    }
    Ok((mirror, apt_proxy))
}

/// `suite:`, `variant:` and `arch:`, checked.
fn release(r: &Reader) -> Result<(String, String, String), ConfigError> {
    let suite = r.string("suite", DEFAULT_SUITE)?;
    if let Some(why) = crate::suite::unsupported(&suite) {
        return Err(r.err(&["suite"], why));
    }
    let variant = r.string("variant", DEFAULT_VARIANT)?;
    if !VARIANTS.contains(&variant.as_str()) {
        let known = VARIANTS.join(", ");
        let why = format!("`{variant}` is not a bootstrap variant ({known})");
        return Err(r.err(&["variant"], why));
    }
    let arch = r.string("arch", DEFAULT_ARCH)?;
    if !is_word(&arch) {
        return Err(r.err(
            &["arch"],
            format!("`{arch}` is not a Debian architecture such as amd64"),
        ));
    }
    Ok((suite, variant, arch))
}

/// The initrd's part of the plan: kernel, modules, firmware, init.
fn initrd_plan(
    r: &Reader,
    kind: Kind,
    compression: Compression,
) -> Result<InitrdPlan, ConfigError> {
    let kernel = match r.get::<String>("kernel")?.as_deref() {
        None | Some("basefs") => KernelChoice::Basefs,
        Some(p) if is_package(p) && !p.contains('=') => KernelChoice::Package(p.to_string()),
        Some(p) => {
            let why = format!(
                "`{p}` is neither `basefs` nor a kernel package name such as linux-image-amd64"
            );
            return Err(r.err(&["kernel"], why));
        }
    };
    let init_template = match r.path("init_template")? {
        Some(p) => p,
        None => in_project(r.vars, "initrd/init.j2")?,
    };
    if kind == Kind::Initrd && !init_template.is_file() {
        return Err(r.err(
            &["init_template"],
            format!(
                "{} does not exist (set `init_template:` to the initrd's init template)",
                init_template.display()
            ),
        ));
    }
    let modules = r.get::<Vec<String>>("modules")?;
    if let Some(m) = &modules {
        r.each("modules", m, is_word, "a kernel module name")?;
    }
    Ok(InitrdPlan {
        kernel,
        modules,
        firmware: firmware(r)?,
        compression,
        init_template,
        defaults: init_defaults(r)?,
    })
}

/// A default path of the project: `REL` beside the vars file's directory
/// (`vars/x.yml` → `./REL`) when it exists there, else under the current
/// directory.
fn in_project(vars: &Vars, rel: &str) -> Result<PathBuf, ConfigError> {
    let beside = vars
        .main
        .parent()
        .and_then(Path::parent)
        .map(|p| p.join(rel));
    match beside {
        Some(p) if p.exists() => Ok(p),
        _ => Ok(std::env::current_dir()
            .map_err(|e| ConfigError(format!("cannot read the current directory: {e}")))?
            .join(rel)),
    }
}

fn squashfs_options(r: &Reader, source_date_epoch: u64) -> Result<SquashfsOptions, ConfigError> {
    let mut opts: SquashfsOptions = r.get("squashfs")?.unwrap_or_default();
    opts.source_date_epoch = source_date_epoch;
    opts.validate().map_err(|e| {
        r.err(
            &["squashfs"],
            e.to_string()
                .trim_start_matches("invalid squashfs options: "),
        )
    })?;
    Ok(opts)
}

/// `firmware: true` (the basefs, then Debian's non-free-firmware),
/// `basefs` (only the basefs's) or `false`.
fn firmware(r: &Reader) -> Result<FirmwareSource, ConfigError> {
    use FirmwareSource as Source;
    match r.get::<Yaml>("firmware")? {
        None | Some(Yaml::Bool(true)) => Ok(Source::Debian),
        Some(Yaml::Bool(false)) => Ok(Source::None),
        Some(Yaml::String(s)) if s == "basefs" => Ok(Source::Basefs),
        Some(other) => Err(r.err(&["firmware"], format!("`{}`: use true (the basefs, then Debian's non-free-firmware), basefs (only the basefs's) or false", serde_yaml_ng::to_string(&other).unwrap_or_default().trim()))),
    }
}

/// `kernel_modules: {defaults, drop, keep, compress}`, every pattern checked.
fn kernel_modules(r: &Reader) -> Result<ModuleSelection, ConfigError> {
    let Some(keys) = r.get::<ModuleKeys>("kernel_modules")? else {
        return Ok(ModuleSelection::default());
    };
    for (list, patterns) in [("drop", &keys.drop), ("keep", &keys.keep)] {
        for (i, p) in patterns.iter().enumerate() {
            if let Some(why) = pattern_problem(p) {
                return Err(r.err(
                    &["kernel_modules", list, &i.to_string()],
                    format!("`{p}` {why}"),
                ));
            }
        }
    }
    if let Some(c) = keys
        .compress
        .as_deref()
        .filter(|c| *c != "xz" && *c != "none")
    {
        return Err(r.err(
            &["kernel_modules", "compress"],
            format!("`{c}`: use none (plain .ko, the default) or xz (modules stored as .ko.xz)"),
        ));
    }
    Ok(keys.selection())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompressionKeys {
    format: Option<String>,
    level: Option<i64>,
}

/// `compression:` — overlays: `{level: 0-9}` (gzip); the initrd:
/// `{format: gzip|zstd, level}`; a basefs is compressed by `squashfs:`.
fn compression(r: &Reader, kind: Kind) -> Result<(u32, Compression), ConfigError> {
    let default = (
        crate::archive::cpio::DEFAULT_GZIP_LEVEL,
        Compression::Gzip { level: 6 },
    );
    let Some(keys) = r.get::<CompressionKeys>("compression")? else {
        return Ok(default);
    };
    let level = |range: std::ops::RangeInclusive<i64>, default: i64, format: &str| {
        let l = keys.level.unwrap_or(default);
        if range.contains(&l) {
            Ok(l)
        } else {
            Err(r.err(
                &["compression", "level"],
                format!("{l}: {format} takes {} to {}", range.start(), range.end()),
            ))
        }
    };
    match (kind, keys.format.as_deref()) {
        (Kind::Basefs, _) => Err(r.err(&["compression"], "a basefs is compressed as set by `squashfs: {compressor, level}`; remove `compression:`")),
        (Kind::Overlay, None | Some("gzip")) => Ok((level(0..=9, default.0 as i64, "gzip")? as u32, default.1)),
        (Kind::Overlay, Some(f)) => Err(r.err(&["compression", "format"], format!("`{f}`: overlays are gzip (`compression: {{level: 0-9}}`)"))),
        (Kind::Initrd, None | Some("gzip")) => Ok((default.0, Compression::Gzip { level: level(0..=9, 6, "gzip")? as u32 })),
        (Kind::Initrd, Some("zstd")) => Ok((default.0, Compression::Zstd { level: level(1..=22, 19, "zstd")? as i32 })),
        (Kind::Initrd, Some(f)) => Err(r.err(&["compression", "format"], format!("`{f}`: use gzip or zstd"))),
    }
}

/// The init's defaults from `vars:` (`onfail`, `retries`, `backoff`, `rootsize`).
fn init_defaults(r: &Reader) -> Result<InitDefaults, ConfigError> {
    let mut d = InitDefaults::default();
    let text = |key: &str| -> Option<String> {
        r.vars.vars.get(key)?;
        r.rendered.get(key).map(|v| match v {
            Yaml::String(s) => s.clone(),
            other => serde_yaml_ng::to_string(other)
                .unwrap_or_default()
                .trim()
                .to_string(),
        })
    };
    let number = |key: &str, v: String| {
        v.parse::<u32>()
            .map_err(|_| r.err(&[key], format!("`{v}` is not a whole number")))
    };
    if let Some(v) = text("onfail") {
        if v != "shell" && v != "reboot" {
            return Err(r.err(&["onfail"], format!("`{v}` is not `shell` or `reboot`")));
        }
        d.onfail = v;
    }
    if let Some(v) = text("retries") {
        d.retries = number("retries", v)?;
    }
    if let Some(v) = text("backoff") {
        d.backoff = number("backoff", v)?;
    }
    if let Some(v) = text("rootsize") {
        let digits = v.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G', '%']);
        if digits.is_empty()
            || !digits.chars().all(|c| c.is_ascii_digit())
            || v.len() - digits.len() > 1
        {
            return Err(r.err(
                &["rootsize"],
                format!("`{v}` is not a tmpfs size such as 2G, 512M or 50%"),
            ));
        }
        d.rootsize = v;
    }
    Ok(d)
}
