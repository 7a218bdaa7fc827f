//! The boot config as boot-test reads it: its `boot_test:` section (what to
//! boot, how long to wait, what to assert), and the private copy it serves
//! for the VM under test — the chosen profile made the default, the
//! checker overlay added to it, the serial console last.

use std::path::Path;

use anyhow::bail;
use serde::Deserialize;
use serde_yaml_ng::Value as Yaml;

use super::checks::Expect;
use crate::UsageError;

/// The `boot_test:` section of a boot config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootTestConfig {
    /// Profile to boot (default: the config's default profile).
    pub profile: Option<String>,
    /// Seconds to wait for the checks (default 600).
    pub timeout: Option<u64>,
    /// Guest memory in MiB (default 1536).
    pub memory: Option<u32>,
    #[serde(default)]
    pub expect: Vec<Expect>,
}

/// Read the boot config (a missing file at the default path is an empty
/// config) and its `boot_test:` section.
pub fn load(path: &Path, is_default: bool) -> anyhow::Result<(Yaml, BootTestConfig)> {
    let value: Yaml = if path.is_file() {
        crate::yaml::load(path)?
    } else if is_default {
        Yaml::Mapping(Default::default())
    } else {
        return Err(UsageError(format!("{}: no such boot config", path.display())).into());
    };
    let test = match value.get("boot_test") {
        Some(v) => serde_yaml_ng::from_value(v.clone())
            .map_err(|e| crate::ConfigError(format!("{}: boot_test: {e}", path.display())))?,
        None => BootTestConfig::default(),
    };
    Ok((value, test))
}

/// The overlay boot-test adds to the profile it boots: served by boot-test
/// itself, so only the VM under test gets it.
#[derive(Debug, Clone)]
pub struct ExtraOverlay {
    pub url: String,
    pub sha256: String,
}

/// The boot config the test serves: `profile` (or the default, or a
/// profile of its own when there are none) becomes the default, gains
/// `args` and the checker overlay, and the serial console comes last (so
/// /dev/console is ttyS0, which the test reads).
pub fn for_test(
    mut config: Yaml,
    profile: Option<&str>,
    args: &str,
    checker: &ExtraOverlay,
) -> anyhow::Result<Yaml> {
    let Yaml::Mapping(map) = &mut config else {
        bail!("the boot config must be a mapping")
    };
    map.remove("boot_test");
    map.insert("console".into(), "console=tty0 console=ttyS0,115200".into());
    let mut overlay = serde_yaml_ng::Mapping::new();
    overlay.insert("url".into(), checker.url.clone().into());
    overlay.insert("sha256".into(), checker.sha256.clone().into());
    let profiles = match map.get_mut("profiles") {
        Some(Yaml::Sequence(p)) if !p.is_empty() => p,
        _ => {
            let mut p = serde_yaml_ng::Mapping::new();
            p.insert("name".into(), profile.unwrap_or("boot-test").into());
            map.insert("profiles".into(), Yaml::Sequence(vec![Yaml::Mapping(p)]));
            match map.get_mut("profiles") {
                Some(Yaml::Sequence(p)) => p,
                _ => bail!("cannot add a profile"),
            }
        }
    };
    let chosen = profile.map(str::to_string).or_else(|| {
        profiles
            .first()
            .and_then(|p| p.get("name"))
            .and_then(Yaml::as_str)
            .map(str::to_string)
    });
    for p in profiles.iter_mut() {
        let Yaml::Mapping(p) = p else { continue };
        let own = p
            .get("args")
            .and_then(Yaml::as_str)
            .unwrap_or("")
            .to_string();
        p.insert("args".into(), format!("{own} {args}").trim().into());
        let mut overlays = match p.remove("overlays") {
            Some(Yaml::Sequence(o)) => o,
            _ => Vec::new(),
        };
        overlays.push(Yaml::Mapping(overlay.clone()));
        p.insert("overlays".into(), Yaml::Sequence(overlays));
    }
    if let Some(name) = chosen {
        map.insert("default".into(), name.into());
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_profile_gets_the_checker_and_the_args() {
        let config: Yaml = serde_yaml_ng::from_str("default: a\nprofiles:\n  - name: a\n    overlays: [discovery]\n    args: rootsize=2G\n  - name: b\nboot_test:\n  profile: b\n").unwrap();
        let checker = ExtraOverlay {
            url: "http://10.0.2.2:1/c.cpio.gz".into(),
            sha256: "ab".repeat(32),
        };
        let out = for_test(config, Some("b"), "no_timer_check", &checker).unwrap();
        assert_eq!(out.get("default").and_then(Yaml::as_str), Some("b"));
        assert!(out.get("boot_test").is_none());
        let a = &out["profiles"][0];
        assert_eq!(a["args"].as_str(), Some("rootsize=2G no_timer_check"));
        assert_eq!(a["overlays"][0].as_str(), Some("discovery"));
        assert_eq!(
            a["overlays"][1]["url"].as_str(),
            Some("http://10.0.2.2:1/c.cpio.gz")
        );
        let empty = for_test(Yaml::Mapping(Default::default()), None, "", &checker).unwrap();
        assert_eq!(
            empty["profiles"][0]["overlays"][0]["sha256"].as_str(),
            Some(checker.sha256.as_str())
        );
        assert_eq!(
            empty.get("default").and_then(Yaml::as_str),
            Some("boot-test")
        );
    }
}
