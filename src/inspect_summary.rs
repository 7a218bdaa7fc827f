//! `mkimage inspect --summary`: where an image's bytes go — the size of
//! the regular files under each top-level directory, and of the kernel
//! modules by subsystem (`drivers/net`, `sound`, `fs`…), to see what a
//! `kernel_modules:` selection would save. Sizes are the files' own
//! (uncompressed); the header gives the image's size on disk.

use std::collections::BTreeMap;
use std::path::Path;

use crate::archive::ListEntry;

/// Bytes and file count per key.
#[derive(Debug, Default, PartialEq)]
pub struct Tally(BTreeMap<String, (u64, usize)>);

impl Tally {
    fn add(&mut self, key: &str, size: u64) {
        let slot = self.0.entry(key.to_string()).or_default();
        slot.0 += size;
        slot.1 += 1;
    }

    /// Largest first (then by name).
    pub fn sorted(&self) -> Vec<(&str, u64, usize)> {
        let mut rows: Vec<_> = self
            .0
            .iter()
            .map(|(k, (b, n))| (k.as_str(), *b, *n))
            .collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        rows
    }
}

/// What `--summary` prints about one image.
#[derive(Debug, Default)]
pub struct Summary {
    pub files: usize,
    pub bytes: u64,
    pub top: Tally,
    /// Kernel version → its modules by subsystem.
    pub modules: BTreeMap<String, Tally>,
}

/// Tally regular files by top-level directory and modules by subsystem.
pub fn summarize(entries: &[ListEntry]) -> Summary {
    let mut s = Summary::default();
    for e in entries.iter().filter(|e| e.file_type() == libc::S_IFREG) {
        s.files += 1;
        s.bytes += e.size;
        let path = e.path.trim_start_matches("./");
        s.top.add(path.split('/').next().unwrap_or(path), e.size);
        if let Some((version, subsystem)) = module_subsystem(path) {
            s.modules
                .entry(version)
                .or_default()
                .add(&subsystem, e.size);
        }
    }
    s
}

/// `usr/lib/modules/V/kernel/drivers/net/x/y.ko` → (`V`, `drivers/net`):
/// up to two directories under `kernel/`.
pub fn module_subsystem(path: &str) -> Option<(String, String)> {
    let rest = path
        .strip_prefix("usr/lib/modules/")
        .or_else(|| path.strip_prefix("lib/modules/"))?;
    let (version, rest) = rest.split_once('/')?;
    let rel = rest.strip_prefix("kernel/")?;
    crate::kmod::module_name(Path::new(rel))?;
    let dirs: Vec<&str> = rel.split('/').collect();
    let dirs = &dirs[..dirs.len() - 1];
    let key = if dirs.is_empty() {
        "(top)".to_string()
    } else {
        dirs[..dirs.len().min(2)].join("/")
    };
    Some((version.to_string(), key))
}

/// The report, as `mkimage inspect --summary` prints it.
pub fn render(file: &Path, format: &str, on_disk: u64, s: &Summary) -> String {
    let mb = |b: u64| format!("{:9.1} MB", b as f64 / 1e6);
    let mut out = format!(
        "{}: {format}, {} bytes on disk; {} files, {} in files\n",
        file.display(),
        on_disk,
        s.files,
        mb(s.bytes).trim()
    );
    out.push_str("\nby top-level directory:\n");
    for (k, b, n) in s.top.sorted() {
        out.push_str(&format!("{} {n:>7} files  {k}\n", mb(b)));
    }
    for (version, tally) in &s.modules {
        let (bytes, count) = tally
            .0
            .values()
            .fold((0, 0), |(b, n), (b2, n2)| (b + b2, n + n2));
        out.push_str(&format!(
            "\nkernel {version}: {count} modules, {}, by subsystem:\n",
            mb(bytes).trim()
        ));
        for (k, b, n) in tally.sorted() {
            out.push_str(&format!("{} {n:>7} modules  {k}\n", mb(b)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64) -> ListEntry {
        ListEntry {
            path: path.into(),
            mode: libc::S_IFREG | 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            size,
            target: None,
            rdev: (0, 0),
        }
    }

    #[test]
    fn tallies_directories_and_subsystems() {
        let entries = vec![
            file(
                "usr/lib/modules/6.1.0-9-amd64/kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko",
                300,
            ),
            file(
                "usr/lib/modules/6.1.0-9-amd64/kernel/drivers/net/virtio_net.ko.xz",
                100,
            ),
            file("usr/lib/modules/6.1.0-9-amd64/kernel/sound/core/snd.ko", 50),
            file("usr/lib/modules/6.1.0-9-amd64/kernel/fs/mbcache.ko", 5),
            file("usr/lib/modules/6.1.0-9-amd64/modules.dep", 7),
            file("etc/hostname", 11),
            ListEntry {
                mode: libc::S_IFDIR | 0o755,
                ..file("etc", 0)
            },
        ];
        let s = summarize(&entries);
        assert_eq!((s.files, s.bytes), (6, 473));
        assert_eq!(s.top.sorted(), [("usr", 462, 5), ("etc", 11, 1)]);
        let m = &s.modules["6.1.0-9-amd64"];
        assert_eq!(
            m.sorted(),
            [("drivers/net", 400, 2), ("sound/core", 50, 1), ("fs", 5, 1)]
        );
        let text = render(Path::new("b.squashfs"), "squashfs", 1000, &s);
        assert!(text.contains("kernel 6.1.0-9-amd64: 4 modules"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with("0.0 MB") && l.ends_with("drivers/net")),
            "{text}"
        );
    }
}
