//! The basefs's kept kernel modules compressed one by one with xz, as the
//! kernel's own `make modules_install` does (`.ko.xz`, crc32 check, 1 MiB
//! dictionary) and as Debian ships them from trixie on: kmod (modprobe,
//! udev) and mkimage's initrd builder read them. squashfs compresses the
//! basefs with zstd at level 3 in 128 KiB blocks; xz over a whole module
//! makes the modules ~25% smaller than that, which the basefs needs to fit
//! its 100 MB. At preset 2, not the kernel's 6: on 400 of the kernel's
//! modules 3.4x less time for 6% more bytes (7.91 vs 7.44 MB), which was
//! half of a cold `play` (114 of 195 s in the basefs build). Every result
//! is kept in the build cache by the module's sha256 and the preset: a
//! kernel's modules are compressed once, the same bytes every time.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::Context;
use liblzma::stream::{Check, Filters, LzmaOptions, Stream};

/// The cache of compressed modules, under the build's `cache_dir`.
pub const CACHE_DIR: &str = "modules-xz";

/// How many modules were replaced, and how many of them came from the cache.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Compressed {
    pub modules: usize,
    pub cached: usize,
}

/// Replace every `*.ko` under `dir` by its `*.ko.xz` (from `cache` when it
/// has it). Already compressed modules are left as they are.
pub fn compress_tree(dir: &Path, cache: &Path) -> anyhow::Result<Compressed> {
    let (compressed, originals) = compress_beside(dir, cache, None)?;
    remove_originals(&originals)?;
    Ok(compressed)
}

/// Write a `*.ko.xz` beside every `*.ko` under `dir` (from `cache` when it
/// has it) and leave the `*.ko` there: the caller removes them
/// ([`remove_originals`]) once nothing reads them any more. `stop`, when
/// set, ends the work early with an error (a warm-up no longer wanted).
pub fn compress_beside(
    dir: &Path,
    cache: &Path,
    stop: Option<&AtomicBool>,
) -> anyhow::Result<(Compressed, Vec<PathBuf>)> {
    fs::create_dir_all(cache).with_context(|| format!("cannot create {}", cache.display()))?;
    let modules: Vec<PathBuf> = crate::archive::walk::walk(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .into_iter()
        .filter(|i| i.meta.is_file() && i.abs.extension().is_some_and(|e| e == "ko"))
        .map(|i| i.abs)
        .collect();
    let next = AtomicUsize::new(0);
    let cached = AtomicUsize::new(0);
    let failed: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(module) = modules.get(i) else { break };
                let result = match stop {
                    Some(stop) if stop.load(Ordering::Relaxed) => {
                        Err(anyhow::anyhow!("stopped before {}", module.display()))
                    }
                    _ => compress_one(module, cache),
                };
                match result {
                    Ok(true) => {
                        cached.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(false) => {}
                    Err(e) => {
                        if let Ok(mut slot) = failed.lock() {
                            slot.get_or_insert(e);
                        }
                        next.store(modules.len(), Ordering::Relaxed);
                    }
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().ok().flatten() {
        return Err(e);
    }
    let compressed = Compressed {
        modules: modules.len(),
        cached: cached.into_inner(),
    };
    Ok((compressed, modules))
}

/// Remove the `*.ko` that [`compress_beside`] left beside their `*.ko.xz`.
pub fn remove_originals(originals: &[PathBuf]) -> anyhow::Result<()> {
    for module in originals {
        fs::remove_file(module).with_context(|| format!("cannot remove {}", module.display()))?;
    }
    Ok(())
}

/// Compress one module (true: it came from the cache).
fn compress_one(module: &Path, cache: &Path) -> anyhow::Result<bool> {
    let bytes = fs::read(module).with_context(|| format!("cannot read {}", module.display()))?;
    let cached = cache.join(format!(
        "{}.p{PRESET}.ko.xz",
        crate::artifact::sha256_bytes(&bytes)
    ));
    let hit = cached.is_file();
    if !hit {
        let xz = xz(&bytes).with_context(|| format!("cannot compress {}", module.display()))?;
        let mut tmp = tempfile::NamedTempFile::new_in(cache)
            .with_context(|| format!("cannot write to {}", cache.display()))?;
        tmp.write_all(&xz)?;
        tmp.persist(&cached)
            .with_context(|| format!("cannot store {}", cached.display()))?;
    }
    let mut name = module.as_os_str().to_owned();
    name.push(".xz");
    let target = PathBuf::from(name);
    // A link shares the cache's copy; another filesystem gets its own.
    if fs::hard_link(&cached, &target).is_err() {
        fs::copy(&cached, &target).with_context(|| format!("cannot write {}", target.display()))?;
    }
    Ok(hit)
}

/// The xz preset of the modules (the kernel's own is 6; see above).
const PRESET: u32 = 2;

/// xz as the kernel compresses modules (1 MiB dictionary, crc32), at `PRESET`.
pub fn xz(data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut opts = LzmaOptions::new_preset(PRESET)?;
    opts.dict_size(1 << 20);
    let mut filters = Filters::new();
    filters.lzma2(&opts);
    let stream = Stream::new_stream_encoder(&filters, Check::Crc32)?;
    let mut enc = liblzma::write::XzEncoder::new_stream(Vec::with_capacity(data.len() / 3), stream);
    enc.write_all(data)?;
    Ok(enc.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compresses_once_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("kernel");
        fs::create_dir_all(tree.join("drivers/net")).unwrap();
        let module = b"\x7fELF module bytes ".repeat(500);
        fs::write(tree.join("drivers/net/a.ko"), &module).unwrap();
        fs::write(tree.join("drivers/net/b.ko.xz"), b"already").unwrap();
        let cache = dir.path().join("cache");
        assert_eq!(
            compress_tree(&tree, &cache).unwrap(),
            Compressed {
                modules: 1,
                cached: 0
            }
        );
        assert!(!tree.join("drivers/net/a.ko").exists());
        let back = crate::kmod::read_module(&tree.join("drivers/net/a.ko.xz")).unwrap();
        assert_eq!(back, module);
        assert_eq!(
            fs::read(tree.join("drivers/net/b.ko.xz")).unwrap(),
            b"already"
        );
        // Once more from the cache: the same bytes.
        fs::create_dir_all(dir.path().join("again")).unwrap();
        fs::write(dir.path().join("again/a.ko"), &module).unwrap();
        assert_eq!(
            compress_tree(&dir.path().join("again"), &cache).unwrap(),
            Compressed {
                modules: 1,
                cached: 1
            }
        );
        assert_eq!(
            fs::read(dir.path().join("again/a.ko.xz")).unwrap(),
            fs::read(tree.join("drivers/net/a.ko.xz")).unwrap()
        );
        assert_eq!(fs::read_dir(&cache).unwrap().count(), 1);
    }
}
