//! `dmsetup` for the initrd, so the init can put a dm-verity device over the
//! downloaded basefs (busybox has no device-mapper applet, and Debian's
//! kernel has device-mapper as a module, so `dm-mod.create=` cannot be used).
//!
//! Debian's `dmsetup` and the packages of the shared libraries it links are
//! fetched from the configured mirror and cache, like busybox-static —
//! never copied from the build host. Only the files the binary needs go in:
//! the ELF interpreter and the `DT_NEEDED` closure, found in the unpacked
//! packages (about 4 MB, 1.7 MB compressed).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Context;
use object::read::elf::{Dyn, FileHeader, ProgramHeader, SectionHeader};

use crate::apt::Fetcher;

/// The packages that hold dmsetup and its libraries (bookworm and trixie;
/// trixie's libudev1 also needs libcap2's libcap.so.2).
pub const PACKAGES: &[&str] = &[
    "dmsetup",
    "libdevmapper1.02.1",
    "libc6",
    "libselinux1",
    "libudev1",
    "libpcre2-8-0",
    "libcap2",
];

/// Where the init finds dmsetup.
pub const BINARY: &str = "sbin/dmsetup";

/// dmsetup and the files it needs at run time, by path in the initrd.
pub struct DmSetup {
    /// initrd path (relative) → source file in an unpacked package.
    pub files: BTreeMap<String, PathBuf>,
    /// Package versions, for the manifest.
    pub versions: BTreeMap<String, String>,
}

/// Fetch (or find in the cache) the packages and collect dmsetup's closure.
pub fn fetch(fetcher: &Fetcher) -> anyhow::Result<DmSetup> {
    let (files, versions) = fetch_tool(
        fetcher,
        PACKAGES,
        BINARY,
        &["sbin/dmsetup", "usr/sbin/dmsetup"],
    )?;
    Ok(DmSetup { files, versions })
}

/// A binary for the initrd from Debian: `packages` (the first holds the
/// binary at one of the paths `at`, the rest its libraries) fetched and
/// unpacked, then the binary put at `dest` with its closure. Returns the
/// files by initrd path and the package versions.
pub fn fetch_tool(
    fetcher: &Fetcher,
    packages: &[&str],
    dest: &str,
    at: &[&str],
) -> anyhow::Result<(BTreeMap<String, PathBuf>, BTreeMap<String, String>)> {
    let mut trees = Vec::new();
    let mut versions = BTreeMap::new();
    for name in packages {
        let pkg = fetcher.resolve(name)?;
        trees.push(fetcher.unpacked(&pkg)?);
        versions.insert(pkg.name, pkg.version);
    }
    let first = packages.first().copied().unwrap_or_default();
    let binary = trees
        .iter()
        .flat_map(|t| at.iter().map(|p| t.join(p)))
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "package {first} {} has none of {}",
                versions.get(first).map_or("", |v| v.as_str()),
                at.join(", ")
            )
        })?;
    let files = closure_at(&binary, dest, &trees, packages)?;
    Ok((files, versions))
}

/// The binary at [`BINARY`], its interpreter at the path it names, and every
/// library it needs (transitively) under `lib/x86_64-linux-gnu/`.
pub fn closure(binary: &Path, trees: &[PathBuf]) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    closure_at(binary, BINARY, trees, PACKAGES)
}

/// [`closure`] of a binary put at `dest`, its libraries found in the
/// unpacked `packages` at `trees`.
pub fn closure_at(
    binary: &Path,
    dest: &str,
    trees: &[PathBuf],
    packages: &[&str],
) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let missing = |lib: &str, by: &Path| {
        format!(
            "{} needs {lib}, which none of the packages {} provide",
            by.display(),
            packages.join(", ")
        )
    };
    let mut files = BTreeMap::from([(dest.to_string(), binary.to_path_buf())]);
    let mut seen = BTreeSet::new();
    let mut todo = vec![binary.to_path_buf()];
    while let Some(elf) = todo.pop() {
        let deps = dynamic_deps(&elf)?;
        if let Some(interp) = deps.interpreter {
            // libc names the interpreter in DT_NEEDED too: one copy, where PT_INTERP says.
            let name = Path::new(&interp)
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            let found = find_library(&name, trees).with_context(|| missing(&name, &elf))?;
            files.insert(interp.trim_start_matches('/').to_string(), found);
            seen.insert(name);
        }
        for lib in deps.needed {
            if seen.insert(lib.clone()) {
                let found = find_library(&lib, trees).with_context(|| missing(&lib, &elf))?;
                files.insert(format!("lib/x86_64-linux-gnu/{lib}"), found.clone());
                todo.push(found);
            }
        }
    }
    Ok(files)
}

/// A library by file name in the unpacked packages' library dirs.
fn find_library(name: &str, trees: &[PathBuf]) -> Option<PathBuf> {
    let dirs = [
        "lib/x86_64-linux-gnu",
        "usr/lib/x86_64-linux-gnu",
        "lib64",
        "lib",
        "usr/lib",
    ];
    trees
        .iter()
        .flat_map(|t| dirs.iter().map(move |d| t.join(d).join(name)))
        .find(|p| p.is_file())
}

/// What an ELF file asks the dynamic linker for.
#[derive(Debug, Default, PartialEq)]
pub struct DynamicDeps {
    /// `PT_INTERP`, e.g. `/lib64/ld-linux-x86-64.so.2`.
    pub interpreter: Option<String>,
    /// `DT_NEEDED` entries, in order.
    pub needed: Vec<String>,
}

/// Read `PT_INTERP` and `DT_NEEDED` of a 64-bit ELF file.
pub fn dynamic_deps(path: &Path) -> anyhow::Result<DynamicDeps> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&data).with_context(|| format!("{}: not a 64-bit ELF file we can read", path.display()))
}

fn parse(data: &[u8]) -> object::read::Result<DynamicDeps> {
    let header = object::elf::FileHeader64::<object::Endianness>::parse(data)?;
    let endian = header.endian()?;
    let mut deps = DynamicDeps::default();
    for ph in header.program_headers(endian, data)? {
        if let Some(interp) = ph.interpreter(endian, data)? {
            deps.interpreter = Some(String::from_utf8_lossy(interp).to_string());
        }
    }
    let sections = header.sections(endian, data)?;
    for section in sections.iter() {
        if let Some((entries, link)) = section.dynamic(endian, data)? {
            let strings = sections.strings(endian, data, link)?;
            for d in entries {
                if d.tag32(endian) == Some(object::elf::DT_NEEDED) {
                    deps.needed
                        .push(String::from_utf8_lossy(d.string(endian, strings)?).to_string());
                }
            }
        }
    }
    Ok(deps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_dynamic_executable() {
        // Any dynamically linked program of the test host will do.
        let deps = dynamic_deps(Path::new("/bin/ls")).unwrap();
        assert_eq!(
            deps.interpreter.as_deref(),
            Some("/lib64/ld-linux-x86-64.so.2")
        );
        assert!(deps.needed.iter().any(|n| n == "libc.so.6"), "{deps:?}");
        assert!(dynamic_deps(Path::new("/etc/hostname")).is_err());
    }

    #[test]
    fn closure_names_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let err = closure(Path::new("/bin/ls"), &[dir.path().to_path_buf()]).unwrap_err();
        assert!(
            format!("{err:#}")
                .contains("needs ld-linux-x86-64.so.2, which none of the packages dmsetup"),
            "{err:#}"
        );
    }
}
