//! Overlays: roles run on top of the mounted basefs (and parent overlays);
//! what they changed — the overlayfs upper dir — is packed as a gzipped newc
//! cpio, with whiteouts kept and opaque dirs expanded so the initrd can
//! unpack it onto a tmpfs upper without xattrs.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::mount::MsFlags;

use super::{basefs::run_roles, tree, workdir::WorkDir, Job};
use crate::archive::tree::{tree_entries, TreeOptions};
use crate::artifact::{self, Entry, Manifest, Ref};
use crate::{sys, UsageError};

/// Left out of every overlay: files only the build needed, per-machine
/// identity, and logs the build wrote.
pub const BUILD_ONLY: &[&str] = &[
    "var/lib/apt/lists",
    "var/cache/apt",
    "var/cache/debconf/*-old",
    "var/lib/dpkg/*-old",
    "var/cache/ldconfig/aux-cache",
    "var/cache/man",
    "var/log/*",
    "etc/apt/apt.conf.d/00mkimage-build",
    "etc/apt/apt.conf.d/*proxy*",
    "etc/resolv.conf",
    "etc/machine-id",
    "etc/ssh/ssh_host_*",
    "var/lib/systemd/random-seed",
    "usr/sbin/policy-rc.d",
    "usr/share/doc/*",
    "usr/share/man/*",
    "usr/share/info/*",
    "usr/share/locale/*",
    "root/.bash_history",
    "root/.cache",
    "tmp/*",
    "var/tmp/*",
];

/// The artifact file of an overlay build.
pub fn file_name(name: &str) -> String {
    format!("{name}.cpio.gz")
}

/// An input found in the output dir: its file and content hash.
#[derive(Debug, Clone)]
pub struct Input {
    pub path: PathBuf,
    pub entry: Option<Entry>,
}

impl Input {
    pub fn reference(&self) -> anyhow::Result<Ref> {
        let file = self.path.file_name().unwrap_or_default().to_string_lossy().to_string();
        let sha256 = match &self.entry {
            Some(e) => e.sha256.clone(),
            None => artifact::sha256_file(&self.path)?.1,
        };
        Ok(Ref { file, sha256 })
    }
}

/// Find the basefs a build names (`base:`: a build name from the manifest, or
/// a file), or the only basefs of the output dir when none is named.
pub fn find_base(cfg: &crate::config::Config, out: &Path, manifest: &Manifest) -> anyhow::Result<Input> {
    let input = match &cfg.base {
        Some(base) => find(out, manifest, "basefs", base, &super::basefs::file_name(base))?,
        None => {
            let all: Vec<&Entry> = manifest.artifacts.values().filter(|e| e.kind == "basefs").collect();
            match all.as_slice() {
                [one] => Input { path: out.join(&one.file), entry: Some((*one).clone()) },
                [] => {
                    return Err(UsageError(format!(
                        "{}: no basefs in {}: build one first (mkimage basefs --vars vars/basefs.yml --out {}) or set `base:`",
                        cfg.file.display(),
                        out.display(),
                        out.display()
                    ))
                    .into())
                }
                _ => return Err(UsageError(format!("{}: {} holds several basefs builds: set `base:` to one of them", cfg.file.display(), out.display())).into()),
            }
        }
    };
    let mut magic = [0u8; 4];
    let read = fs::File::open(&input.path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic));
    if read.is_err() || &magic != b"hsqs" {
        return Err(UsageError(format!("{}: not a squashfs image (rebuild it with mkimage basefs)", input.path.display())).into());
    }
    Ok(input)
}

/// A named input: a manifest build name of `kind`, else a file in `out` or a path.
pub fn find(out: &Path, manifest: &Manifest, kind: &str, name: &str, default_file: &str) -> anyhow::Result<Input> {
    if let Some(e) = manifest.find(kind, name) {
        let path = out.join(&e.file);
        if path.is_file() {
            return Ok(Input { path, entry: Some(e.clone()) });
        }
    }
    for candidate in [out.join(name), PathBuf::from(name), out.join(default_file)] {
        if candidate.is_file() {
            let file = candidate.file_name().unwrap_or_default().to_string_lossy().to_string();
            let entry = manifest.artifacts.get(&file).cloned();
            return Ok(Input { path: candidate, entry });
        }
    }
    Err(UsageError(format!(
        "{kind} `{name}` not found in {} (build it first with `mkimage {} --vars vars/{name}.yml --out {}`)",
        out.display(),
        if kind == "basefs" { "basefs" } else { "overlay" },
        out.display()
    ))
    .into())
}

pub fn build(job: &Job) -> anyhow::Result<Vec<Entry>> {
    let cfg = job.cfg;
    let manifest = Manifest::load(job.out)?;
    let base = find_base(cfg, job.out, &manifest)?;
    let parents: Vec<Input> = cfg
        .parents
        .iter()
        .map(|p| find(job.out, &manifest, "overlay", p, &file_name(p)))
        .collect::<anyhow::Result<_>>()
        .with_context(|| format!("{}: parents", cfg.file.display()))?;

    let mut work = WorkDir::create(job.sys, job.out, &cfg.name, job.keep_build_dir)?;
    job.progress.step(format!("mount {} and {} parent overlay(s)", base.path.display(), parents.len()));
    let base_dir = work.path.join("base");
    sys::mounts::mount_image(job.sys, &base.path, "squashfs", &base_dir)?;
    // Lower layers, top-most first: the last parent, …, the first, the base.
    let mut lowers = Vec::new();
    for (i, parent) in parents.iter().enumerate().rev() {
        let dir = work.path.join(format!("parent{i}"));
        extract_cpio_gz(&parent.path, &dir).with_context(|| format!("cannot unpack parent overlay {}", parent.path.display()))?;
        lowers.push(dir);
    }
    lowers.push(base_dir.clone());
    let (upper, merged) = (work.path.join("upper"), work.path.join("merged"));
    let overlay_work = work.path.join("work");
    for d in [&upper, &merged, &overlay_work] {
        fs::create_dir_all(d)?;
    }
    let lowerdir = lowers.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":");
    let options = format!(
        "lowerdir={lowerdir},upperdir={},workdir={},redirect_dir=off,metacopy=off,index=off,xino=off",
        upper.display(),
        overlay_work.display()
    );
    sys::mount_fs(job.sys, "overlay", "overlay", &merged, MsFlags::empty(), Some(&options))?;

    run_roles(job, &merged)?;
    sys::unmount_all(job.sys, &merged)?;

    let added = added_packages(&upper, &merged, base.entry.as_ref());
    job.progress.step(format!("pack {}", file_name(&cfg.name)));
    let opts = TreeOptions { source_date_epoch: cfg.source_date_epoch, exclude: BUILD_ONLY.iter().map(|s| s.to_string()).chain(cfg.cleanup.iter().cloned()).collect(), overlay_lowers: Some(lowers.clone()) };
    let entries = tree_entries(&upper, &opts)?;
    let count = entries.len();
    let level = gzip_level(cfg)?;
    let name = file_name(&cfg.name);
    let staged = artifact::staging_file(job.out, &name)?;
    let file = staged.as_file().try_clone()?;
    crate::archive::cpio::write_newc_gz(entries, std::io::BufWriter::new(file), level)
        .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
        .with_context(|| format!("cannot write {name}"))?;
    let (size, sha256) = artifact::publish(job.out, &name, staged.path())?;
    let _ = staged.keep();
    job.progress.done(format!("{name}: {count} entries, {:.1} MB", size as f64 / 1e6));
    let entry = Entry {
        kind: "overlay".into(),
        name: cfg.name.clone(),
        file: name,
        size,
        sha256,
        inputs_hash: tree::inputs_hash(cfg),
        packages: added,
        base: Some(base.reference()?),
        parents: parents.iter().map(Input::reference).collect::<anyhow::Result<_>>()?,
        build_time: artifact::now(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    };
    artifact::record(job.out, std::slice::from_ref(&entry))?;
    work.succeeded();
    Ok(vec![entry])
}

/// gzip level from `compression: {level: N}` (default: cpio::DEFAULT_GZIP_LEVEL).
fn gzip_level(cfg: &crate::config::Config) -> anyhow::Result<u32> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Gz {
        level: Option<u32>,
    }
    let level = match &cfg.compression {
        Some(v) => serde_yaml_ng::from_value::<Gz>(v.clone())
            .map_err(|e| crate::config::ConfigError(format!("{}: compression: {e} (overlays take `compression: {{level: 0-9}}`)", cfg.file.display())))?
            .level
            .unwrap_or(crate::archive::cpio::DEFAULT_GZIP_LEVEL),
        None => crate::archive::cpio::DEFAULT_GZIP_LEVEL,
    };
    if level > 9 {
        return Err(crate::config::ConfigError(format!("{}: compression level {level}: gzip takes 0 to 9", cfg.file.display())).into());
    }
    Ok(level)
}

/// Packages the overlay installed or upgraded (from the merged dpkg status,
/// when the role changed it), compared with the basefs's.
fn added_packages(upper: &Path, merged_view: &Path, base: Option<&Entry>) -> std::collections::BTreeMap<String, String> {
    if !upper.join("var/lib/dpkg/status").exists() {
        return Default::default();
    }
    // The upper holds the whole (copied-up) status file.
    let _ = merged_view;
    let now = tree::packages(upper);
    match base {
        Some(b) => now.into_iter().filter(|(k, v)| b.packages.get(k) != Some(v)).collect(),
        None => now,
    }
}

/// Unpack a cpio.gz (as mkimage writes them) into `dest`, keeping modes,
/// ownership, symlinks and whiteout devices.
pub fn extract_cpio_gz(archive: &Path, dest: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let file = fs::File::open(archive)?;
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(file), &mut raw)?;
    fs::create_dir_all(dest)?;
    for e in crate::archive::cpio::read_newc(&raw[..])? {
        let rel = Path::new(&e.path);
        if rel.is_absolute() || rel.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            anyhow::bail!("{}: unsafe path `{}` in archive", archive.display(), e.path);
        }
        let path = dest.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let perm = e.mode & 0o7777;
        match e.mode & libc::S_IFMT {
            libc::S_IFDIR => fs::create_dir_all(&path)?,
            libc::S_IFREG => fs::write(&path, &e.data)?,
            libc::S_IFLNK => symlink(String::from_utf8_lossy(&e.data).to_string(), &path)?,
            libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO => {
                let kind = nix::sys::stat::SFlag::from_bits_truncate(e.mode & libc::S_IFMT);
                nix::sys::stat::mknod(&path, kind, nix::sys::stat::Mode::from_bits_truncate(perm), nix::sys::stat::makedev(e.rdev.0 as u64, e.rdev.1 as u64))?;
            }
            _ => continue,
        }
        std::os::unix::fs::lchown(&path, Some(e.uid), Some(e.gid))?;
        if e.mode & libc::S_IFMT != libc::S_IFLNK {
            fs::set_permissions(&path, fs::Permissions::from_mode(perm))?;
        }
    }
    Ok(())
}
