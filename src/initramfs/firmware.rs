//! Firmware for the initrd's drivers. A NIC whose driver cannot load its
//! firmware may get no link at all (bnx2: Broadcom NetXtreme II) or run
//! crippled (tg3's TSO engines, r8169's PHY patches, ice without its DDP
//! package), and the initrd must bring the network up before anything else.
//! The files a module declares (`firmware=` in its modinfo) are taken from
//! the basefs when it has them, else from Debian's `non-free-firmware`
//! component: its `Contents-all` index (fetched and verified by the private
//! apt, through the proxy and the `.deb` cache) names the package of each
//! file — firmware packages are `Architecture: all`, so `Contents-amd64`
//! (CPU microcode, the proprietary nvidia driver's GSP files) is never
//! fetched. Each package's copyright file goes in beside its firmware.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::pack::Firmware;
use crate::apt::Fetcher;
pub use crate::config::initrd::FirmwareSource as Source;
use crate::kmod::Module;

/// The archive component Debian ships firmware in (bookworm and later).
pub const COMPONENT: &str = "non-free-firmware";

/// The firmware going into the initrd.
#[derive(Debug, Default)]
pub struct Collected {
    pub files: Vec<Firmware>,
    /// initrd path → the copyright file of a firmware package.
    pub licenses: BTreeMap<String, PathBuf>,
    /// Firmware packages used (name → version), for the manifest.
    pub packages: BTreeMap<String, String>,
}

/// Add Debian's firmware for every file the modules declare that `found`
/// lacks; then warn, per module, about what is still missing.
pub fn complete(
    modules: &[Module],
    mut found: Vec<Firmware>,
    source: Source,
    fetcher: &dyn Fn() -> anyhow::Result<Fetcher>,
) -> anyhow::Result<Collected> {
    let mut out = Collected::default();
    if source == Source::None {
        return Ok(out);
    }
    if source == Source::Debian && !missing(modules, &found).is_empty() {
        let fetcher = fetcher()?;
        let index = Index::read(&fetcher.contents_files()?)?;
        let mut by_package: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        for fw in missing(modules, &found) {
            if let Some((package, path, name)) = index.find(&fw) {
                by_package.entry(package).or_default().push((path, name));
            }
        }
        let pkgs = by_package
            .keys()
            .map(|name| fetcher.resolve(name))
            .collect::<anyhow::Result<Vec<_>>>()?;
        fetcher.fetch_all(&pkgs)?;
        for ((name, files), pkg) in by_package.into_iter().zip(pkgs) {
            let tree = fetcher.unpacked(&pkg)?;
            for (path, fw) in files {
                found.push(Firmware {
                    name: fw,
                    source: tree.join(path),
                });
            }
            let copyright = tree.join(format!("usr/share/doc/{name}/copyright"));
            if copyright.is_file() {
                out.licenses
                    .insert(format!("usr/share/doc/{name}/copyright"), copyright);
            }
            out.packages.insert(pkg.name, pkg.version);
        }
    }
    for m in modules {
        let left: Vec<&String> = m.firmware.iter().filter(|fw| !has(&found, fw)).collect();
        if let Some(first) = left.first() {
            let why = match source {
                Source::Debian => format!("neither the basefs nor Debian's {COMPONENT} has them"),
                _ => "install the firmware package in the basefs to include them (or set `firmware: true` to take them from Debian's non-free-firmware)".to_string(),
            };
            tracing::warn!(module = %m.name, "{} firmware file(s) it may need are not in the kernel tree (e.g. {first}); left out — {why}", left.len());
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found.dedup_by(|a, b| a.name == b.name);
    out.files = found;
    Ok(out)
}

/// A declared file is there as itself or compressed.
fn has(found: &[Firmware], fw: &str) -> bool {
    ["", ".xz", ".zst"]
        .iter()
        .any(|ext| found.iter().any(|f| f.name == format!("{fw}{ext}")))
}

/// Declared files (safe relative names) not in `found`, sorted.
fn missing(modules: &[Module], found: &[Firmware]) -> Vec<String> {
    let all: BTreeSet<String> = modules
        .iter()
        .flat_map(|m| m.firmware.iter())
        .filter(|fw| !fw.contains("..") && !fw.starts_with('/'))
        .cloned()
        .collect();
    all.into_iter().filter(|fw| !has(found, fw)).collect()
}

/// A `Contents` index: firmware file → (package, path in the package).
struct Index(BTreeMap<String, (String, String)>);

impl Index {
    fn read(files: &[PathBuf]) -> anyhow::Result<Index> {
        let mut map = BTreeMap::new();
        for file in files {
            let text = std::fs::read_to_string(file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            for (path, package) in parse(&text) {
                let name = ["usr/lib/firmware/", "lib/firmware/"]
                    .iter()
                    .find_map(|d| path.strip_prefix(d));
                if let Some(name) = name {
                    map.entry(name.to_string())
                        .or_insert((package, path.clone()));
                }
            }
        }
        Ok(Index(map))
    }

    /// (package, path in it, name under lib/firmware) of a declared file,
    /// plain or compressed.
    fn find(&self, fw: &str) -> Option<(String, String, String)> {
        ["", ".xz", ".zst"].iter().find_map(|ext| {
            let name = format!("{fw}{ext}");
            self.0
                .get(&name)
                .map(|(p, path)| (p.clone(), path.clone(), name))
        })
    }
}

/// `PATH   SECTION/PACKAGE[,SECTION/PACKAGE…]` lines → (path, first package).
fn parse(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let (path, locations) = line.trim_end().rsplit_once(char::is_whitespace)?;
            let package = locations.split(',').next()?.rsplit('/').next()?;
            let path = path.trim();
            (!path.is_empty()
                && !package.is_empty()
                && !Path::new(path).components().any(|c| c.as_os_str() == ".."))
            .then(|| (path.to_string(), package.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(fw: &[&str]) -> Module {
        Module {
            name: "tg3".into(),
            rel: "tg3.ko".into(),
            depends: vec![],
            softdep_pre: vec![],
            firmware: fw.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn contents_lines() {
        let text = "lib/firmware/tigon/tg3.bin                              non-free-firmware/kernel/firmware-misc-nonfree\n\
                    usr/lib/firmware/rtl_nic/rtl8168h-2.fw   non-free-firmware/kernel/firmware-realtek,non-free-firmware/kernel/other\n\
                    etc/default/raspi-firmware non-free-firmware/misc/raspi-firmware\n";
        let p = parse(text);
        assert_eq!(
            p[0],
            (
                "lib/firmware/tigon/tg3.bin".into(),
                "firmware-misc-nonfree".into()
            )
        );
        assert_eq!(p[1].1, "firmware-realtek");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("Contents-all");
        std::fs::write(&f, text).unwrap();
        let index = Index::read(&[f]).unwrap();
        assert_eq!(
            index.find("tigon/tg3.bin"),
            Some((
                "firmware-misc-nonfree".into(),
                "lib/firmware/tigon/tg3.bin".into(),
                "tigon/tg3.bin".into()
            ))
        );
        assert_eq!(
            index.find("rtl_nic/rtl8168h-2.fw").map(|f| f.1),
            Some("usr/lib/firmware/rtl_nic/rtl8168h-2.fw".into())
        );
        assert!(index.find("default/raspi-firmware").is_none());
    }

    #[test]
    fn basefs_only_keeps_what_is_found() {
        let found = vec![Firmware {
            name: "tigon/tg3.bin".into(),
            source: "/x".into(),
        }];
        let m = [module(&["tigon/tg3.bin", "tigon/tg3_tso.bin", "../evil"])];
        assert_eq!(missing(&m, &found), ["tigon/tg3_tso.bin"]);
        let c = complete(&m, found, Source::Basefs, &|| {
            anyhow::bail!("the basefs source must not fetch")
        })
        .unwrap();
        assert_eq!(c.files.len(), 1);
        assert!(c.packages.is_empty());
    }
}
