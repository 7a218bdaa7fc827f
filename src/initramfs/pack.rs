//! Packing the initrd: the init rendered from its template, the file list
//! (busybox and applet links, modules in load order, firmware, device
//! nodes, the udhcpc script) as sorted cpio entries with fixed mtimes, and
//! the compressed newc archive.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::busybox::{self, Busybox};
use super::dmsetup::DmSetup;
use super::kernel_source::Kernel;
use crate::archive::cpio::{self, Entry, EntryKind};
pub use crate::config::initrd::Compression;
use crate::config::initrd::InitDefaults;
use crate::kmod::{read_module, Module};

/// The file in the initrd that lists module paths in load order.
pub const MODULES_ORDER: &str = "etc/modules.order";

/// Where the init's shell libraries go in the initrd.
pub const SCRIPTS_DIR: &str = "lib/mkimage";

/// The shell libraries beside the init template (`*.sh`), sorted by name.
pub fn read_scripts(template: &Path) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let dir = template.parent().unwrap_or(Path::new("."));
    let listing =
        std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    let mut scripts = Vec::new();
    for entry in listing {
        let path = entry
            .with_context(|| format!("cannot list {}", dir.display()))?
            .path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if name.ends_with(".sh") && path.is_file() {
            let bytes =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            scripts.push((name, bytes));
        }
    }
    scripts.sort();
    Ok(scripts)
}

/// One firmware file to include: its path under `lib/firmware` and source.
#[derive(Debug, Clone, PartialEq)]
pub struct Firmware {
    pub name: String,
    pub source: PathBuf,
}

/// The firmware the modules declare, where the kernel tree has it (what
/// is missing is `firmware::complete`'s to find or warn about).
pub fn find_firmware(modules: &[Module], dirs: &[PathBuf]) -> Vec<Firmware> {
    let mut found = BTreeMap::new();
    for m in modules {
        for fw in &m.firmware {
            if fw.contains("..") || fw.starts_with('/') {
                continue;
            }
            let hit = dirs
                .iter()
                .flat_map(|d| ["", ".xz", ".zst"].map(|ext| d.join(format!("{fw}{ext}"))))
                .find(|p| p.is_file());
            if let Some(source) = hit {
                let name = source
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                let rel = Path::new(fw)
                    .with_file_name(name)
                    .to_string_lossy()
                    .to_string();
                found.insert(rel.clone(), Firmware { name: rel, source });
            }
        }
    }
    found.into_values().collect()
}

/// Render the init template (strict: an undefined variable is an error).
pub fn render_init(
    template: &Path,
    name: &str,
    kernel_version: &str,
    defaults: &InitDefaults,
) -> anyhow::Result<String> {
    let source = std::fs::read_to_string(template)
        .with_context(|| format!("cannot read init template {}", template.display()))?;
    let mut env = crate::template::environment();
    let shown = template.display().to_string();
    env.add_template_owned(shown.clone(), source)
        .with_context(|| format!("{shown}: template syntax error"))?;
    let ctx = minijinja::context! {
        name => name,
        kernel_version => kernel_version,
        modules_order => format!("/{MODULES_ORDER}"),
        default_onfail => defaults.onfail,
        default_retries => defaults.retries,
        default_backoff => defaults.backoff,
        default_rootsize => defaults.rootsize,
    };
    let tmpl = env.get_template(&shown)?;
    tmpl.render(ctx)
        .with_context(|| format!("cannot render {shown}"))
}

/// What goes into the initrd.
pub struct Contents<'a> {
    pub kernel: &'a Kernel,
    pub modules: &'a [Module],
    pub firmware: &'a [Firmware],
    pub busybox: &'a Busybox,
    pub dmsetup: &'a DmSetup,
    /// Other files by initrd path: libdeflate-gunzip and its libraries,
    /// the firmware packages' copyright files.
    pub extra: &'a BTreeMap<String, PathBuf>,
    pub init: Vec<u8>,
    pub udhcpc: Vec<u8>,
    /// Shell libraries the init sources (`initrd/*.sh` → `/lib/mkimage/`).
    pub scripts: &'a [(String, Vec<u8>)],
    pub mtime: u64,
}

/// Name → (kind, mode) of the entries being gathered.
type Files = BTreeMap<String, (EntryKind, u32)>;

/// The archive's entries, sorted by path, parents before children, every
/// mtime = `mtime`.
pub fn entries(c: &Contents) -> anyhow::Result<Vec<Entry>> {
    let mut files = skeleton();
    add_programs(&mut files, c);
    add_modules(&mut files, c)?;
    // Every parent directory exists as an entry of its own.
    let parents: Vec<String> = files
        .keys()
        .flat_map(|p| {
            let parts: Vec<&str> = p.split('/').collect();
            (1..parts.len())
                .map(move |i| parts[..i].join("/"))
                .collect::<Vec<_>>()
        })
        .collect();
    for p in parents {
        files.entry(p).or_insert((EntryKind::Dir, 0o755));
    }
    Ok(files
        .into_iter()
        .map(|(path, (kind, mode))| Entry {
            path,
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: c.mtime,
        })
        .collect())
}

/// The directories and device nodes every initrd has.
fn skeleton() -> Files {
    let mut files = Files::new();
    for dir in [
        "bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "run", "tmp", "newroot",
        "root", "etc", "mnt",
    ] {
        files.insert(dir.into(), (EntryKind::Dir, 0o755));
    }
    files.insert("tmp".into(), (EntryKind::Dir, 0o1777));
    files.insert(
        "dev/console".into(),
        (EntryKind::CharDev { major: 5, minor: 1 }, 0o600),
    );
    files.insert(
        "dev/null".into(),
        (EntryKind::CharDev { major: 1, minor: 3 }, 0o666),
    );
    files
}

/// The init and its scripts, busybox and its applets, dmsetup, and the
/// other files by initrd path.
fn add_programs(files: &mut Files, c: &Contents) {
    files.insert("init".into(), (EntryKind::Data(c.init.clone()), 0o755));
    files.insert(
        "usr/share/udhcpc/default.script".into(),
        (EntryKind::Data(c.udhcpc.clone()), 0o755),
    );
    for (name, bytes) in c.scripts {
        files.insert(
            format!("{SCRIPTS_DIR}/{name}"),
            (EntryKind::Data(bytes.clone()), 0o644),
        );
    }
    files.insert(
        "etc/nsswitch.conf".into(),
        (EntryKind::Data(b"hosts: files dns\n".to_vec()), 0o644),
    );
    files.insert(
        "etc/hosts".into(),
        (EntryKind::Data(b"127.0.0.1 localhost\n".to_vec()), 0o644),
    );
    files.insert(
        "bin/busybox".into(),
        (EntryKind::File(c.busybox.binary.clone()), 0o755),
    );
    for applet in &c.busybox.applets {
        files
            .entry(applet.clone())
            .or_insert((EntryKind::Symlink(busybox::link_target(applet)), 0o777));
    }
    for (path, source) in &c.dmsetup.files {
        files.insert(path.clone(), (EntryKind::File(source.clone()), 0o755));
    }
    for (path, source) in c.extra {
        let mode = if path.starts_with("usr/share/") {
            0o644
        } else {
            0o755
        };
        files.insert(path.clone(), (EntryKind::File(source.clone()), mode));
    }
}

/// The modules under `lib/modules/VERSION` (decompressed), in load order
/// in `modules.order`, and their firmware.
fn add_modules(files: &mut Files, c: &Contents) -> anyhow::Result<()> {
    let kdir = format!("lib/modules/{}", c.kernel.version);
    let mut order = String::new();
    for m in c.modules {
        let rel = m.rel.to_string_lossy();
        let rel = rel.trim_end_matches(".xz").trim_end_matches(".zst");
        let path = format!("{kdir}/{rel}");
        let bytes = read_module(&c.kernel.modules_dir.join(&m.rel))?;
        files.insert(path.clone(), (EntryKind::Data(bytes), 0o644));
        order.push_str(&format!("/{path}\n"));
    }
    files.insert(
        MODULES_ORDER.into(),
        (EntryKind::Data(order.into_bytes()), 0o644),
    );
    for fw in c.firmware {
        files.insert(
            format!("lib/firmware/{}", fw.name),
            (EntryKind::File(fw.source.clone()), 0o644),
        );
    }
    Ok(())
}

/// Write the entries as a compressed newc archive.
pub fn write(
    entries: Vec<Entry>,
    out: &std::fs::File,
    compression: &Compression,
) -> anyhow::Result<()> {
    let buffered = std::io::BufWriter::new(out);
    let mut buffered = match compression {
        Compression::Gzip { level } => cpio::write_newc_gz(entries, buffered, *level)?,
        Compression::Zstd { level } => {
            let enc = zstd::stream::write::Encoder::new(buffered, *level)?;
            cpio::write_newc(entries, enc)?.finish()?
        }
    };
    buffered.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_template_renders_strictly() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("init.j2");
        std::fs::write(&t, "K={{ kernel_version }} F={{ default_onfail }}\n").unwrap();
        let out = render_init(&t, "x", "6.1.0-1-amd64", &InitDefaults::default()).unwrap();
        assert_eq!(out, "K=6.1.0-1-amd64 F=shell\n");
        std::fs::write(&t, "{{ no_such_var }}").unwrap();
        assert!(render_init(&t, "x", "v", &InitDefaults::default()).is_err());
    }

    #[test]
    fn shipped_init_renders() {
        let t = Path::new(env!("CARGO_MANIFEST_DIR")).join("initrd/init.j2");
        let out = render_init(&t, "initrd", "6.1.0-1-amd64", &InitDefaults::default()).unwrap();
        assert!(out.starts_with("#!/bin/sh\n"));
        assert!(
            out.contains("ONFAIL=shell") && out.contains("exec switch_root /newroot /sbin/init")
        );
        crate::exec::Cmd::new("sh")
            .arg("-n")
            .stdin_bytes(out.clone())
            .run()
            .unwrap();
        crate::exec::Cmd::new("busybox")
            .args(["sh", "-n"])
            .stdin_bytes(out.clone())
            .run()
            .unwrap();
        let scripts = read_scripts(&t).unwrap();
        let names: Vec<&str> = scripts.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["bench.sh", "fetch.sh", "media.sh", "report.sh"]);
        for (name, bytes) in scripts {
            assert!(
                out.contains(&format!(". /{SCRIPTS_DIR}/{name}")),
                "the init does not source {name}"
            );
            crate::exec::Cmd::new("busybox")
                .args(["sh", "-n"])
                .stdin_bytes(bytes)
                .run()
                .unwrap();
        }
    }

    #[test]
    fn missing_firmware_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("intel")).unwrap();
        std::fs::write(dir.path().join("intel/a.bin"), b"fw").unwrap();
        let m = Module {
            name: "x".into(),
            rel: "x.ko".into(),
            depends: vec![],
            softdep_pre: vec![],
            firmware: vec!["intel/a.bin".into(), "intel/missing.bin".into()],
        };
        let fw = find_firmware(&[m], &[dir.path().to_path_buf()]);
        assert_eq!(fw.len(), 1);
        assert_eq!(fw[0].name, "intel/a.bin");
    }
}
