//! A bootstrap that fills its filesystem, told in one line instead of the
//! bootstrapper's last twenty `Cannot write: No space left on device`:
//! which filesystem (its mount point), about how much the bootstrap needs
//! there, and how much was free when it started.
//!
//! The need is an estimate, and says so: the installed size of the
//! packages the variant installs (with their dependencies, from the
//! `Packages` lists the bootstrapper fetched), apt's lists and caches
//! beside them while it runs (about 2.5 times the uncompressed `Packages`,
//! measured on trixie minbase: 137 MB for 55 MB), and the `.deb`s where the
//! package cache is. Measured here (mmdebstrap, minbase, sampling `df`):
//! trixie peaked at 261 MiB, estimated 257; bookworm at 290, estimated 286.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::apt::deb822;

/// Does the bootstrapper's output say a write failed for want of space?
pub fn is_full(output: &str) -> bool {
    output.contains("No space left on device")
}

/// One filesystem the bootstrap writes to, as it was before it started.
#[derive(Debug, Clone)]
struct Place {
    mount: PathBuf,
    dev: u64,
    free: u64,
    /// The build's own tmpfs (`build_dir:`).
    ram: bool,
}

impl Place {
    fn of(path: &Path) -> Option<Place> {
        let path = path.canonicalize().ok()?;
        let stat = nix::sys::statvfs::statvfs(&path).ok()?;
        Some(Place {
            mount: mount_point(&path),
            dev: std::fs::metadata(&path).ok()?.dev(),
            free: stat.blocks_available() * stat.fragment_size(),
            ram: false,
        })
    }

    fn free_now(&self) -> u64 {
        nix::sys::statvfs::statvfs(&self.mount)
            .map(|s| s.blocks_available() * s.fragment_size())
            .unwrap_or(0)
    }
}

/// The free space where the tree and where the `.deb`s go, measured before
/// the bootstrap: the tree's directory (`target`'s parent, the build dir)
/// and the package cache.
#[derive(Debug, Clone)]
pub struct Before {
    tree: Option<Place>,
    debs: Option<Place>,
}

impl Before {
    /// `in_ram`: the tree's directory is the build's own tmpfs.
    pub fn measure(target: &Path, in_ram: bool, cache: &Path) -> Before {
        Before {
            tree: target
                .parent()
                .and_then(Place::of)
                .map(|p| Place { ram: in_ram, ..p }),
            debs: Place::of(cache),
        }
    }
}

/// What a bootstrap needs, for the message.
pub struct Need<'a> {
    pub suite: &'a str,
    pub variant: &'a str,
    pub arch: &'a str,
    pub components: &'a [String],
    /// `packages:` (pins allowed).
    pub include: &'a [String],
    /// The bootstrap's target (its `var/lib/apt/lists` is read).
    pub target: &'a Path,
    /// The suite's InRelease (the uncompressed sizes of its lists), if at hand.
    pub inrelease: Option<&'a Path>,
}

/// The one line for a bootstrap that ran out of space.
pub fn full_error(before: &Before, need: &Need) -> String {
    let same = matches!((&before.tree, &before.debs), (Some(t), Some(d)) if t.dev == d.dev);
    // The full one: the only one, or the one with the least space left now.
    let (full, tree_there, debs_there) = match (&before.tree, &before.debs) {
        (Some(t), Some(_)) if same => (t, true, true),
        (Some(t), Some(d)) if d.free_now() < t.free_now() => (d, false, true),
        (Some(t), _) => (t, true, false),
        (None, Some(d)) => (d, false, true),
        (None, None) => {
            return format!(
                "no space left on the filesystem bootstrapping {} needs; free some space or build elsewhere (--out, cache_dir:)",
                need.suite
            )
        }
    };
    let estimate = estimate(need).map(|e| {
        (if tree_there { e.tree + e.lists } else { 0 }) + if debs_there { e.debs } else { 0 }
    });
    let mib = |b: u64| b.div_ceil(1 << 20);
    let head = format!(
        "the filesystem at {} is full: bootstrapping {} ({})",
        full.mount.display(),
        need.suite,
        need.variant
    );
    let tail = if full.ram && tree_there {
        "; that is the build's own tmpfs (build_dir: auto or ram): set `build_dir: disk` in the vars file, or free memory"
    } else {
        "; free some space there or build elsewhere (--out for the build, cache_dir: for the caches)"
    };
    match estimate {
        Some(bytes) if bytes > full.free => format!(
            "{head} needs about {} MiB there (an estimate from the sizes of the packages it installs and of apt's lists) and {} MiB were free{tail}",
            mib(bytes),
            mib(full.free)
        ),
        _ => format!(
            "{head} needs more than the {} MiB that were free there{tail}",
            mib(full.free)
        ),
    }
}

/// Bytes a bootstrap needs: its tree, apt's lists and caches, its `.deb`s.
#[derive(Debug, Default, PartialEq)]
struct Estimate {
    tree: u64,
    lists: u64,
    debs: u64,
}

fn estimate(need: &Need) -> Option<Estimate> {
    let lists_dir = need.target.join("var/lib/apt/lists");
    let mut lists: Vec<PathBuf> = std::fs::read_dir(&lists_dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with("_Packages"))
        .collect();
    lists.sort();
    let mut packages = String::new();
    for list in &lists {
        packages.push_str(&std::fs::read_to_string(list).ok()?);
        packages.push('\n');
    }
    let listed = need
        .inrelease
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|r| packages_sizes(&r, need.components, need.arch))
        .filter(|&n| n > 0)
        .unwrap_or(packages.len() as u64);
    let mut e = closure_sizes(&packages, need.variant, need.include)?;
    e.lists = listed * 5 / 2;
    Some(e)
}

/// The uncompressed size of the components' `binary-ARCH/Packages` lists,
/// from an InRelease's SHA256 list.
fn packages_sizes(release: &str, components: &[String], arch: &str) -> u64 {
    let wanted: Vec<String> = components
        .iter()
        .map(|c| format!("{c}/binary-{arch}/Packages"))
        .collect();
    let mut in_sha256 = false;
    let mut total = 0;
    for line in release.lines() {
        if !line.starts_with(' ') {
            in_sha256 = line.trim_end() == "SHA256:";
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if let (true, [_, size, name]) = (in_sha256, &words[..]) {
            if wanted.iter().any(|w| w == name) {
                total += size.parse::<u64>().unwrap_or(0);
            }
        }
    }
    total
}

/// Installed and `.deb` sizes of what the variant installs: `Essential:
/// yes`, the priorities the variant takes, apt where it does, the
/// included packages, and their dependencies (first alternatives,
/// virtual packages by the first provider). `None` without packages.
fn closure_sizes(packages: &str, variant: &str, include: &[String]) -> Option<Estimate> {
    let paragraphs = deb822::parse(packages);
    let mut by_name: BTreeMap<&str, &deb822::Paragraph> = BTreeMap::new();
    let mut providers: BTreeMap<String, &str> = BTreeMap::new();
    for p in &paragraphs {
        let Some(name) = p.get("Package") else {
            continue;
        };
        by_name.entry(name).or_insert(p);
        for provided in p.get("Provides").unwrap_or("").split(',') {
            if let Some(v) = provided.split_whitespace().next() {
                providers.entry(v.to_string()).or_insert(name);
            }
        }
    }
    if by_name.is_empty() {
        return None;
    }
    let priorities: &[&str] = match variant {
        "extract" | "custom" | "essential" | "apt" | "fakechroot" => &[],
        "important" => &["required", "important"],
        "standard" => &["required", "important", "standard"],
        _ => &["required"],
    };
    let mut wanted: Vec<String> = by_name
        .iter()
        .filter(|(_, p)| {
            p.get("Essential") == Some("yes")
                || p.get("Priority").is_some_and(|x| priorities.contains(&x))
        })
        .map(|(n, _)| n.to_string())
        .collect();
    if !matches!(variant, "extract" | "custom" | "essential") {
        wanted.push("apt".into());
    }
    if variant == "buildd" {
        wanted.push("build-essential".into());
    }
    wanted.extend(
        include
            .iter()
            .map(|p| p.split('=').next().unwrap_or(p).to_string()),
    );
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let mut e = Estimate::default();
    while let Some(name) = wanted.pop() {
        let name = name.split(':').next().unwrap_or(&name).to_string();
        let Some((&real, p)) = by_name
            .get_key_value(name.as_str())
            .or_else(|| providers.get(&name).and_then(|r| by_name.get_key_value(r)))
        else {
            continue;
        };
        if !seen.insert(real) {
            continue;
        }
        let number = |f: &str| p.get(f).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        e.tree += number("Installed-Size") * 1024;
        e.debs += number("Size");
        for field in ["Pre-Depends", "Depends"] {
            for dep in p.get(field).unwrap_or("").split(',') {
                let first = dep.split('|').next().unwrap_or("");
                if let Some(d) = first.split_whitespace().next() {
                    wanted.push(d.to_string());
                }
            }
        }
    }
    Some(e)
}

/// The mount point a (canonical) path is under, from this process's mountinfo.
fn mount_point(path: &Path) -> PathBuf {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| path.starts_with(m))
        .max_by_key(|m| m.components().count())
        .unwrap_or_else(|| PathBuf::from("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACKAGES: &str = "\
Package: base-files
Essential: yes
Priority: required
Installed-Size: 300
Size: 70000
Depends: mawk | awk

Package: mawk
Priority: required
Installed-Size: 200
Size: 60000
Provides: awk

Package: gawk
Priority: optional
Installed-Size: 5000
Size: 900000
Provides: awk

Package: apt
Priority: important
Installed-Size: 4000
Size: 1400000
Depends: libc6 (>= 2.34), base-files

Package: libc6
Priority: optional
Installed-Size: 12000
Size: 2800000

Package: curl
Priority: optional
Installed-Size: 500
Size: 300000
Depends: libc6
";

    #[test]
    fn the_variants_set_and_its_dependencies() {
        let e = closure_sizes(PACKAGES, "minbase", &[]).unwrap();
        // base-files, mawk (the first alternative), apt, libc6.
        assert_eq!(e.tree, (300 + 200 + 4000 + 12000) * 1024);
        assert_eq!(e.debs, 70000 + 60000 + 1400000 + 2800000);
        let with_curl = closure_sizes(PACKAGES, "minbase", &["curl=1".into()]).unwrap();
        assert_eq!(with_curl.tree, e.tree + 500 * 1024);
        let essential = closure_sizes(PACKAGES, "essential", &[]).unwrap();
        assert_eq!(essential.tree, (300 + 200) * 1024);
        assert!(closure_sizes("", "minbase", &[]).is_none());
    }

    #[test]
    fn lists_sizes_from_the_inrelease() {
        let release = "Suite: trixie\nMD5Sum:\n 0a 9999 main/binary-amd64/Packages\nSHA256:\n \
                       aa 56634892 main/binary-amd64/Packages\n bb 9679000 main/binary-amd64/Packages.xz\n \
                       cc 1000 main/binary-all/Packages\n dd 30773 non-free-firmware/binary-amd64/Packages\n \
                       ee 50000000 main/binary-arm64/Packages\n ff 70000 contrib/binary-amd64/Packages\n";
        let comps = ["main".to_string(), "non-free-firmware".to_string()];
        assert_eq!(packages_sizes(release, &comps, "amd64"), 56634892 + 30773);
    }

    #[test]
    fn one_line_naming_the_mount_and_the_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("bootstrap");
        let lists = target.join("var/lib/apt/lists");
        std::fs::create_dir_all(&lists).unwrap();
        std::fs::write(
            lists.join("m_dists_trixie_main_binary-amd64_Packages"),
            PACKAGES,
        )
        .unwrap();
        let before = Before {
            tree: Some(Place {
                mount: PathBuf::from("/mnt/small"),
                dev: 1,
                free: 1 << 20,
                ram: false,
            }),
            debs: Some(Place {
                mount: PathBuf::from("/mnt/small"),
                dev: 1,
                free: 1 << 20,
                ram: false,
            }),
        };
        let need = Need {
            suite: "trixie",
            variant: "minbase",
            arch: "amd64",
            components: &[],
            include: &[],
            target: &target,
            inrelease: None,
        };
        let line = full_error(&before, &need);
        assert!(!line.contains('\n'));
        // 16.1 MiB of tree, 2.5 × the list, 4.1 MiB of .debs: 21 MiB.
        assert!(
            line.starts_with("the filesystem at /mnt/small is full: bootstrapping trixie (minbase) needs about 21 MiB there (an estimate")
                && line.contains("and 1 MiB were free; free some space there"),
            "{line}"
        );
        let in_ram = Before {
            tree: before.tree.clone().map(|p| Place { ram: true, ..p }),
            debs: None,
        };
        let line = full_error(&in_ram, &need);
        assert!(
            line.contains(
                "that is the build's own tmpfs (build_dir: auto or ram): set `build_dir: disk`"
            ),
            "{line}"
        );
        std::fs::remove_dir_all(&lists).unwrap();
        assert!(
            full_error(&before, &need).contains("needs more than the 1 MiB that were free there"),
            "without lists, a lower bound"
        );
        assert!(is_full(
            "tar: ./usr/bin/x: Cannot write: No space left on device\n"
        ));
    }

    #[test]
    fn the_mount_point_of_a_path() {
        assert_eq!(mount_point(Path::new("/proc/self")), PathBuf::from("/proc"));
        assert!(Place::of(Path::new("/proc")).is_some());
    }
}
