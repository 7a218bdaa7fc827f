//! Kernel modules, for the initrd and the basefs alike: where a kernel's
//! modules live ([`MODULE_DIRS`]), their names, find them by name in a
//! kernel's `lib/modules/VERSION`, read each one's `.modinfo` ELF section by hand
//! (Debian's kernel package ships no `modules.dep`; depmod makes it at
//! install time), close over `depends=` and `softdep=pre:`, and fix a load
//! order (dependencies first) that the init follows with plain `insmod`;
//! and a tree's depmod index (`depmod`: `modules.dep`, softdeps, aliases),
//! what the basefs's module selection keeps closed over. Both closures are
//! [`close_over`].

pub mod depmod;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Where a kernel's `VERSION/` modules dir is, relative to a root: merged
/// /usr first, then the old place.
pub const MODULE_DIRS: [&str; 2] = ["usr/lib/modules", "lib/modules"];

/// Errors resolving modules.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("kernel module `{name}` is neither a module nor built into kernel {version} ({dir}); check the spelling in `modules:` (list them with: find {dir} -name '*.ko*')")]
    Missing {
        name: String,
        version: String,
        dir: String,
    },
    #[error("{path}: not a loadable kernel module: {reason}")]
    BadModule { path: String, reason: String },
    #[error("kernel modules depend on each other in a cycle: {0}")]
    Cycle(String),
}

/// Canonical module name: `-` and `_` are the same to the kernel.
pub fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// One module file in the kernel tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Module {
    pub name: String,
    /// Path relative to the kernel's `lib/modules/VERSION`.
    pub rel: PathBuf,
    pub depends: Vec<String>,
    pub softdep_pre: Vec<String>,
    pub firmware: Vec<String>,
}

/// Brings module files (paths relative to the modules dir) into place
/// before they are read, for trees that are extracted on demand.
pub type Fetch<'a> = Box<dyn Fn(&[PathBuf]) -> anyhow::Result<()> + 'a>;

/// The modules of one kernel, indexed by canonical name.
pub struct KernelModules<'a> {
    pub version: String,
    pub dir: PathBuf,
    files: BTreeMap<String, PathBuf>,
    builtin: BTreeSet<String>,
    fetch: Option<Fetch<'a>>,
}

impl<'a> KernelModules<'a> {
    /// Index `lib/modules/VERSION` (file names only; modinfo is read on demand).
    pub fn open(dir: &Path, version: &str) -> anyhow::Result<KernelModules<'a>> {
        let mut files = BTreeMap::new();
        walk(dir, dir, &mut files).with_context(|| format!("cannot read {}", dir.display()))?;
        Ok(Self::index(dir, version, files, None))
    }

    /// Index modules known by a listing (paths relative to `dir`) whose
    /// files `fetch` extracts into `dir` when they are needed.
    pub fn listed(
        dir: &Path,
        version: &str,
        listing: &[PathBuf],
        fetch: Fetch<'a>,
    ) -> KernelModules<'a> {
        let mut files = BTreeMap::new();
        for rel in listing {
            if let Some(name) = module_name(rel) {
                files.entry(name).or_insert_with(|| rel.clone());
            }
        }
        Self::index(dir, version, files, Some(fetch))
    }

    fn index(
        dir: &Path,
        version: &str,
        files: BTreeMap<String, PathBuf>,
        fetch: Option<Fetch<'a>>,
    ) -> KernelModules<'a> {
        let builtin = fs::read_to_string(dir.join("modules.builtin"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| module_name(Path::new(l.trim())))
            .collect();
        KernelModules {
            version: version.to_string(),
            dir: dir.to_path_buf(),
            files,
            builtin,
            fetch,
        }
    }

    /// With an on-demand tree: extract the closure's files, a level of
    /// dependencies per extraction.
    fn prefetch(&self, wanted: &[String]) -> anyhow::Result<()> {
        let Some(fetch) = &self.fetch else {
            return Ok(());
        };
        let start = wanted.iter().map(|n| canonical(n));
        close_over(start, |level| {
            let names: Vec<String> = level
                .into_iter()
                .filter(|n| self.files.contains_key(n))
                .collect();
            let rels: Vec<PathBuf> = names.iter().map(|n| self.files[n].clone()).collect();
            if rels.is_empty() {
                return Ok(Vec::new());
            }
            fetch(&rels)?;
            let mut next = Vec::new();
            for n in &names {
                if let Some(m) = self.module(n)? {
                    next.extend(m.depends);
                    next.extend(m.softdep_pre);
                }
            }
            Ok(next)
        })?;
        Ok(())
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&canonical(name))
    }

    /// Read one module's metadata, or `None` if it is built in.
    pub fn module(&self, name: &str) -> anyhow::Result<Option<Module>> {
        let name = canonical(name);
        let Some(rel) = self.files.get(&name) else {
            if self.is_builtin(&name) {
                return Ok(None);
            }
            return Err(ModuleError::Missing {
                name,
                version: self.version.clone(),
                dir: self.dir.display().to_string(),
            }
            .into());
        };
        let bytes = read_module(&self.dir.join(rel))?;
        let info = modinfo(&bytes).map_err(|reason| ModuleError::BadModule {
            path: self.dir.join(rel).display().to_string(),
            reason,
        })?;
        let mut m = Module {
            name,
            rel: rel.clone(),
            depends: vec![],
            softdep_pre: vec![],
            firmware: vec![],
        };
        for (key, value) in info {
            match key.as_str() {
                "depends" => m
                    .depends
                    .extend(value.split(',').filter(|s| !s.is_empty()).map(canonical)),
                "softdep" => m.softdep_pre.extend(softdep_pre(&value)),
                "firmware" => m.firmware.push(value),
                _ => {}
            }
        }
        Ok(Some(m))
    }

    /// The dependency closure of `wanted`, in load order (dependencies
    /// first; otherwise in the order asked, then by name). Built-in modules
    /// are left out; a soft dependency that is not a module here is ignored.
    pub fn closure(&self, wanted: &[String]) -> anyhow::Result<Vec<Module>> {
        self.prefetch(wanted)?;
        let mut order = Vec::new();
        let mut done: BTreeMap<String, ()> = BTreeMap::new();
        let mut visiting = Vec::new();
        for name in wanted {
            self.visit(
                &canonical(name),
                false,
                &mut visiting,
                &mut done,
                &mut order,
            )?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        soft: bool,
        visiting: &mut Vec<String>,
        done: &mut BTreeMap<String, ()>,
        order: &mut Vec<Module>,
    ) -> anyhow::Result<()> {
        if done.contains_key(name) {
            return Ok(());
        }
        if let Some(pos) = visiting.iter().position(|v| v == name) {
            let mut cycle = visiting[pos..].to_vec();
            cycle.push(name.to_string());
            return Err(ModuleError::Cycle(cycle.join(" -> ")).into());
        }
        if soft && !self.files.contains_key(name) {
            return Ok(());
        }
        let Some(module) = self.module(name)? else {
            tracing::info!(module = %name, "built into the kernel; nothing to load");
            done.insert(name.to_string(), ());
            return Ok(());
        };
        visiting.push(name.to_string());
        let mut deps: Vec<&String> = module.depends.iter().collect();
        deps.sort();
        for dep in deps {
            self.visit(dep, false, visiting, done, order)?;
        }
        for dep in &module.softdep_pre {
            self.visit(dep, true, visiting, done, order)?;
        }
        visiting.pop();
        done.insert(name.to_string(), ());
        order.push(module);
        Ok(())
    }
}

/// `start` and everything it needs, level by level: `needs` gets each level's
/// newly found items at once (so a caller can fetch them together) and
/// returns what they need. Cycles are fine: nothing is visited twice.
pub fn close_over<T: Ord + Clone>(
    start: impl IntoIterator<Item = T>,
    mut needs: impl FnMut(Vec<T>) -> anyhow::Result<Vec<T>>,
) -> anyhow::Result<BTreeSet<T>> {
    let mut seen = BTreeSet::new();
    let mut level: Vec<T> = start.into_iter().collect();
    while !level.is_empty() {
        let new: Vec<T> = level
            .into_iter()
            .filter(|x| seen.insert(x.clone()))
            .collect();
        if new.is_empty() {
            break;
        }
        level = needs(new)?;
    }
    Ok(seen)
}

fn walk(root: &Path, dir: &Path, files: &mut BTreeMap<String, PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let ft = entry.file_type()?;
        if ft.is_dir() {
            walk(root, &path, files)?;
        } else if let Some(name) = module_name(&path) {
            let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            files.entry(name).or_insert(rel);
        }
    }
    Ok(())
}

/// `kernel/net/packet/af_packet.ko[.xz|.zst]` → `af_packet`.
pub fn module_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let stem = file
        .strip_suffix(".ko")
        .or_else(|| file.strip_suffix(".ko.xz"))
        .or_else(|| file.strip_suffix(".ko.zst"))?;
    Some(canonical(stem))
}

/// A module's bytes, decompressed if it is `.ko.xz` or `.ko.zst`.
pub fn read_module(path: &Path) -> anyhow::Result<Vec<u8>> {
    let file = fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut bytes = Vec::new();
    let name = path.to_string_lossy();
    let result = if name.ends_with(".xz") {
        liblzma::read::XzDecoder::new(file).read_to_end(&mut bytes)
    } else if name.ends_with(".zst") {
        zstd::stream::read::Decoder::new(file).and_then(|mut d| d.read_to_end(&mut bytes))
    } else {
        let mut file = file;
        file.read_to_end(&mut bytes)
    };
    result.with_context(|| format!("cannot read {}", path.display()))?;
    Ok(bytes)
}

/// The `softdep=` value's `pre:` names (`pre: a b post: c` → a, b).
fn softdep_pre(value: &str) -> Vec<String> {
    let mut pre = false;
    let mut out = Vec::new();
    for word in value.split_whitespace() {
        match word {
            "pre:" => pre = true,
            "post:" => pre = false,
            w if pre => out.push(canonical(w)),
            _ => {}
        }
    }
    out
}

/// The key=value strings of an ELF64 little-endian object's `.modinfo` section.
pub fn modinfo(elf: &[u8]) -> Result<Vec<(String, String)>, String> {
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .and_then(|b| usize::try_from(u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))).ok())
    };
    if elf.get(..4) != Some(b"\x7fELF") {
        return Err("no ELF header".into());
    }
    if elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let short = || "truncated ELF headers".to_string();
    let shoff = u64_at(0x28).ok_or_else(short)?;
    let shentsize = u16_at(0x3a).ok_or_else(short)?;
    let shnum = u16_at(0x3c).ok_or_else(short)?;
    let shstrndx = u16_at(0x3e).ok_or_else(short)?;
    let section = |i: usize| -> Option<(usize, usize, usize)> {
        let base = shoff.checked_add(i.checked_mul(shentsize)?)?;
        Some((u32_at(base)?, u64_at(base + 0x18)?, u64_at(base + 0x20)?))
    };
    let (_, str_off, str_size) = section(shstrndx).ok_or_else(short)?;
    let names = elf
        .get(str_off..str_off.saturating_add(str_size))
        .ok_or_else(short)?;
    for i in 0..shnum {
        let (name_off, off, size) = section(i).ok_or_else(short)?;
        let name = names
            .get(name_off..)
            .and_then(|n| n.split(|&b| b == 0).next())
            .unwrap_or(b"");
        if name == b".modinfo" {
            let data = elf.get(off..off.saturating_add(size)).ok_or_else(short)?;
            return Ok(data
                .split(|&b| b == 0)
                .filter_map(|s| {
                    let s = String::from_utf8_lossy(s);
                    let (k, v) = s.split_once('=')?;
                    Some((k.to_string(), v.to_string()))
                })
                .collect());
        }
    }
    Err("no .modinfo section".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 with a shstrtab and a .modinfo section.
    pub(crate) fn fake_ko(info: &[&str]) -> Vec<u8> {
        let shstr = b"\0.shstrtab\0.modinfo\0".to_vec();
        let modinfo: Vec<u8> = info.iter().flat_map(|s| s.bytes().chain([0])).collect();
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        let shstr_off = elf.len();
        elf.extend(&shstr);
        let info_off = elf.len();
        elf.extend(&modinfo);
        let shoff = elf.len();
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        for (name, off, size) in [
            (0u32, 0usize, 0usize),
            (1, shstr_off, shstr.len()),
            (11, info_off, modinfo.len()),
        ] {
            let mut sh = vec![0u8; 64];
            sh[..4].copy_from_slice(&name.to_le_bytes());
            sh[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
            sh[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            elf.extend(sh);
        }
        elf
    }

    fn tree(mods: &[(&str, &[&str])], builtin: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, info) in mods {
            let p = dir.path().join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, fake_ko(info)).unwrap();
        }
        fs::write(dir.path().join("modules.builtin"), builtin).unwrap();
        dir
    }

    #[test]
    fn reads_modinfo() {
        let info = modinfo(&fake_ko(&[
            "license=GPL",
            "depends=virtio,virtio_ring",
            "firmware=a/b.bin",
        ]))
        .unwrap();
        assert_eq!(
            info[1],
            ("depends".to_string(), "virtio,virtio_ring".to_string())
        );
        assert!(modinfo(b"not elf").is_err());
        assert!(modinfo(&fake_ko(&[])[..70]).is_err());
    }

    #[test]
    fn closure_puts_dependencies_first() {
        let t = tree(
            &[
                (
                    "kernel/net/virtio_net.ko",
                    &["depends=net_failover,virtio_ring"],
                ),
                ("kernel/net/net_failover.ko", &["depends=failover"]),
                ("kernel/net/failover.ko", &["depends="]),
                ("kernel/virtio/virtio_ring.ko", &["depends=virtio"]),
                ("kernel/virtio/virtio.ko", &["depends="]),
                (
                    "kernel/fs/overlay.ko",
                    &["depends=", "softdep=pre: crc32c-generic nosuch post: x"],
                ),
                ("kernel/crypto/crc32c_generic.ko", &["depends="]),
            ],
            "kernel/net/packet/af_packet.ko\n",
        );
        let k = KernelModules::open(t.path(), "6.1.0-test").unwrap();
        let wanted: Vec<String> = ["virtio-net", "af_packet", "overlay"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let names: Vec<_> = k
            .closure(&wanted)
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(
            names,
            [
                "failover",
                "net_failover",
                "virtio",
                "virtio_ring",
                "virtio_net",
                "crc32c_generic",
                "overlay"
            ]
        );
        let err = k.closure(&["e1000x".to_string()]).unwrap_err().to_string();
        assert!(
            err.contains("e1000x") && err.contains("6.1.0-test"),
            "{err}"
        );
    }

    #[test]
    fn cycle_is_an_error() {
        let t = tree(&[("a.ko", &["depends=b"]), ("b.ko", &["depends=a"])], "");
        let k = KernelModules::open(t.path(), "v").unwrap();
        assert!(k
            .closure(&["a".into()])
            .unwrap_err()
            .to_string()
            .contains("a -> b -> a"));
    }
}
