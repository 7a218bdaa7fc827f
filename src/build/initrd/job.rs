//! `mkimage initrd --vars FILE`: the initrd options from a build's config.
//!
//! Keys: `kernel:` (`basefs`, the default: the kernel of the basefs build
//! named by `base:`; or a Debian kernel package name), `modules:`,
//! `firmware:`, `compression: {format: gzip|zstd, level}`, and the init's
//! defaults under `vars:` (`onfail`, `retries`, `backoff`, `rootsize`).

use serde::Deserialize;
use serde_yaml_ng::Value as Yaml;

use super::{Compression, InitDefaults, InitrdOptions, KernelSource};
use crate::artifact::{Entry, Manifest};
use crate::build::{overlay, Job};
use crate::config::{Config, ConfigError};
use crate::apt::AptSource;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompressionKeys {
    format: Option<String>,
    level: Option<i32>,
}

pub fn build(job: &Job) -> anyhow::Result<Vec<Entry>> {
    let cfg = job.cfg;
    let manifest = Manifest::load(job.out)?;
    let basefs = overlay::find_base(cfg, job.out, &manifest)?;
    let kernel = match cfg.kernel.as_deref() {
        None | Some("basefs") => KernelSource::Basefs(basefs.path.clone()),
        Some(package) => KernelSource::Package { name: package.to_string() },
    };
    let mut apt = AptSource::new(&cfg.suite, &job.cache_root());
    apt.mirror = Some(cfg.mirror.clone());
    apt.components = cfg.components.clone();
    apt.apt_proxy = cfg.apt_proxy.clone();
    let mut opts = InitrdOptions::new(&cfg.name, kernel, apt, job.out);
    opts.basefs = Some(basefs.path.clone());
    if let Some(modules) = &cfg.modules {
        opts.modules = modules.clone();
    }
    opts.firmware = cfg.firmware;
    opts.compression = compression(cfg)?;
    opts.source_date_epoch = cfg.source_date_epoch;
    opts.init_template = cfg.provisioners_dir.parent().unwrap_or(std::path::Path::new(".")).join("initrd/init.j2");
    opts.defaults = defaults(cfg)?;
    job.progress.step(format!("initrd `{}` from {}", cfg.name, basefs.path.display()));
    let entries = super::build(&opts)?;
    crate::artifact::record(job.out, &entries)?;
    Ok(entries)
}

fn compression(cfg: &Config) -> Result<Compression, ConfigError> {
    let Some(value) = &cfg.compression else { return Ok(Compression::Gzip { level: 6 }) };
    let bad = |why: String| ConfigError(format!("{}: compression: {why}", cfg.file.display()));
    let keys: CompressionKeys = serde_yaml_ng::from_value(value.clone()).map_err(|e| bad(e.to_string()))?;
    match keys.format.as_deref().unwrap_or("gzip") {
        "gzip" => {
            let level = keys.level.unwrap_or(6);
            if !(0..=9).contains(&level) {
                return Err(bad(format!("gzip level {level}: use 0 to 9")));
            }
            Ok(Compression::Gzip { level: level as u32 })
        }
        "zstd" => {
            let level = keys.level.unwrap_or(19);
            if !(1..=22).contains(&level) {
                return Err(bad(format!("zstd level {level}: use 1 to 22")));
            }
            Ok(Compression::Zstd { level })
        }
        other => Err(bad(format!("format `{other}`: use gzip or zstd"))),
    }
}

fn defaults(cfg: &Config) -> Result<InitDefaults, ConfigError> {
    let mut d = InitDefaults::default();
    let text = |v: &Yaml| match v {
        Yaml::String(s) => s.clone(),
        other => serde_yaml_ng::to_string(other).unwrap_or_default().trim().to_string(),
    };
    let number = |key: &str, v: &Yaml| {
        text(v).parse::<u32>().map_err(|_| ConfigError(format!("{}: vars.{key}: `{}` is not a whole number", cfg.file.display(), text(v))))
    };
    if let Some(v) = cfg.vars.get("onfail") {
        d.onfail = text(v);
        if d.onfail != "shell" && d.onfail != "reboot" {
            return Err(ConfigError(format!("{}: vars.onfail: `{}` is not `shell` or `reboot`", cfg.file.display(), d.onfail)));
        }
    }
    if let Some(v) = cfg.vars.get("retries") {
        d.retries = number("retries", v)?;
    }
    if let Some(v) = cfg.vars.get("backoff") {
        d.backoff = number("backoff", v)?;
    }
    if let Some(v) = cfg.vars.get("rootsize") {
        d.rootsize = text(v);
    }
    Ok(d)
}
