//! Writing a directory tree as a squashfs v4 image (the basefs), with
//! backhand by default and `mksquashfs` as the documented fallback for trees
//! whose extended attributes must be kept.
//!
//! Output is deterministic: entries sorted, uid/gid/mode as in the tree,
//! mtimes clamped to SOURCE_DATE_EPOCH, superblock time = that epoch, and
//! the data compressed in a fixed order whatever the number of threads.
//! backhand has no hard links (each link is stored as its own file; file
//! data of a block or more is deduplicated, so the cost is small) and writes
//! no xattrs: a tree with any is refused, naming the files.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

use backhand::compression::{CompressionOptions, Compressor as BhCompressor, Gzip, Lz4, Zstd};
use backhand::{CompressionExtra, ExtraXz, FilesystemCompressor, FilesystemWriter, NodeHeader};
use serde::{Deserialize, Serialize};

use super::error::{bh_text, ArchiveError, XATTR_REPORT_LIMIT};
use super::squashfs_par::Ahead;
use super::walk::walk;
use super::xattr;
use crate::exec::Cmd;

/// Squashfs data compressor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compressor {
    #[default]
    Zstd,
    Gzip,
    Xz,
    Lz4,
}

impl Compressor {
    fn name(self) -> &'static str {
        match self {
            Compressor::Zstd => "zstd",
            Compressor::Gzip => "gzip",
            Compressor::Xz => "xz",
            Compressor::Lz4 => "lz4",
        }
    }
}

/// Which program writes the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SquashfsWriter {
    /// backhand, in-process (default). Refuses trees that carry xattrs.
    #[default]
    Backhand,
    /// squashfs-tools' `mksquashfs`: keeps xattrs (e.g. file capabilities).
    Mksquashfs,
}

/// How the basefs squashfs is written; embeds in a vars file as
/// `squashfs: {compressor: zstd, level: 3, block_size: 131072}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SquashfsOptions {
    pub compressor: Compressor,
    /// Compression level (zstd 1–22, gzip 1–9, xz 0–9; none for lz4).
    /// Default: zstd 3, gzip 9, xz 6.
    pub level: Option<u32>,
    /// Data block size: a power of two from 4 KiB to 1 MiB.
    pub block_size: u32,
    pub writer: SquashfsWriter,
    /// mtimes later than this are clamped to it; also the superblock time.
    /// Set by the build from SOURCE_DATE_EPOCH, not from the vars file.
    #[serde(skip)]
    pub source_date_epoch: u64,
}

impl Default for SquashfsOptions {
    fn default() -> Self {
        SquashfsOptions {
            compressor: Compressor::Zstd,
            level: None,
            block_size: 128 * 1024,
            writer: SquashfsWriter::Backhand,
            source_date_epoch: 0,
        }
    }
}

impl SquashfsOptions {
    /// Check ranges (backhand panics on a bad block size; we report it).
    pub fn validate(&self) -> Result<(), ArchiveError> {
        let bs = self.block_size;
        if !(4096..=1 << 20).contains(&bs) || !bs.is_power_of_two() {
            return Err(ArchiveError::Options(format!(
                "block_size {bs}: must be a power of two from 4096 to 1048576"
            )));
        }
        let range = match self.compressor {
            Compressor::Zstd => Some(1..=22),
            Compressor::Gzip => Some(1..=9),
            Compressor::Xz => Some(0..=9),
            Compressor::Lz4 => None,
        };
        match (self.level, range) {
            (Some(level), Some(r)) if !r.contains(&level) => Err(ArchiveError::Options(format!(
                "level {level} for {}: must be {} to {}",
                self.compressor.name(),
                r.start(),
                r.end()
            ))),
            (Some(_), None) => Err(ArchiveError::Options(
                "lz4 takes no level; remove `level`".into(),
            )),
            _ => u32::try_from(self.source_date_epoch)
                .map(|_| ())
                .map_err(|_| {
                    ArchiveError::Options(format!(
                        "source_date_epoch {} does not fit squashfs's 32-bit time",
                        self.source_date_epoch
                    ))
                }),
        }
    }

    pub(crate) fn fs_compressor(&self) -> Result<FilesystemCompressor, ArchiveError> {
        let bh = |e: backhand::BackhandError| ArchiveError::Options(bh_text(&e));
        Ok(match (self.compressor, self.level) {
            (Compressor::Zstd, level) => FilesystemCompressor::new(
                BhCompressor::Zstd,
                level.map(|compression_level| CompressionOptions::Zstd(Zstd { compression_level })),
            )
            .map_err(bh)?,
            (Compressor::Gzip, level) => FilesystemCompressor::new(
                BhCompressor::Gzip,
                level.map(|compression_level| {
                    CompressionOptions::Gzip(Gzip {
                        compression_level,
                        window_size: 15,
                        strategies: 0,
                    })
                }),
            )
            .map_err(bh)?,
            (Compressor::Xz, level) => {
                let mut c = FilesystemCompressor::new(BhCompressor::Xz, None).map_err(bh)?;
                if let Some(level) = level {
                    let mut extra = ExtraXz::default();
                    extra.level(level).map_err(bh)?;
                    c.extra(CompressionExtra::Xz(extra)).map_err(bh)?;
                }
                c
            }
            // version 1 = LZ4_LEGACY, the only one the kernel reads; flags 0 = not HC.
            (Compressor::Lz4, _) => FilesystemCompressor::new(
                BhCompressor::Lz4,
                Some(CompressionOptions::Lz4(Lz4 {
                    version: 1,
                    flags: 0,
                })),
            )
            .map_err(bh)?,
        })
    }
}

/// Write the tree at `root` as a squashfs image into `out` (from its start;
/// the file is truncated first).
pub fn write_tree(root: &Path, out: &mut File, opts: &SquashfsOptions) -> Result<(), ArchiveError> {
    opts.validate()?;
    out.set_len(0)
        .map_err(ArchiveError::io("squashfs output"))?;
    out.seek(SeekFrom::Start(0))
        .map_err(ArchiveError::io("squashfs output"))?;
    match opts.writer {
        SquashfsWriter::Backhand => write_backhand(root, out, opts, true).map(|_| ()),
        SquashfsWriter::Mksquashfs => write_mksquashfs(root, out, opts),
    }
}

/// Linux's "new" device number encoding, as squashfs stores it.
pub(crate) fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

/// Write with backhand; `parallel`: compress ahead on all cores (the bytes
/// are the same either way, which a test checks). Returns the blocks found
/// compressed ahead and those compressed ahead in vain.
pub(crate) fn write_backhand(
    root: &Path,
    out: &mut File,
    opts: &SquashfsOptions,
    parallel: bool,
) -> Result<(usize, usize), ArchiveError> {
    let items = walk(root).map_err(ArchiveError::io(root))?;
    refuse_xattrs(root, &items)?;
    let epoch = opts.source_date_epoch;
    let clamp = |m: i64| (m.max(0) as u64).min(epoch) as u32;
    let mut fs = FilesystemWriter::default();
    fs.set_block_size(opts.block_size);
    fs.set_time(epoch as u32);
    fs.set_compressor(opts.fs_compressor()?);
    let bad = |path: &Path| {
        let path = path.to_path_buf();
        move |e: backhand::BackhandError| ArchiveError::Squashfs {
            path,
            what: bh_text(&e),
        }
    };
    for item in &items {
        let m = &item.meta;
        if item.rel.as_os_str().is_empty() {
            fs.set_root_mode((m.mode() & 0o7777) as u16);
            fs.set_root_uid(m.uid());
            fs.set_root_gid(m.gid());
            continue;
        }
        let header = NodeHeader::new(
            (m.mode() & 0o7777) as u16,
            m.uid(),
            m.gid(),
            clamp(m.mtime()),
        );
        let ft = m.file_type();
        let rel = &item.rel;
        let dev = || encode_dev(libc::major(m.rdev()), libc::minor(m.rdev()));
        if ft.is_dir() {
            fs.push_dir(rel, header)
        } else if ft.is_file() {
            fs.push_file_from_path(&item.abs, rel, header)
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&item.abs).map_err(ArchiveError::io(&item.abs))?;
            fs.push_symlink(target, rel, header)
        } else if ft.is_char_device() {
            fs.push_char_device(dev(), rel, header)
        } else if ft.is_block_device() {
            fs.push_block_device(dev(), rel, header)
        } else if ft.is_fifo() {
            fs.push_fifo(rel, header)
        } else {
            fs.push_socket(rel, header)
        }
        .map_err(bad(&item.abs))?;
    }
    let ahead = if parallel {
        let files = items
            .iter()
            .filter(|i| i.meta.is_file())
            .map(|i| i.abs.clone())
            .collect();
        let (ahead, kind) = Ahead::start(files, opts.fs_compressor()?, opts.block_size);
        fs.set_kind(kind);
        Some(ahead)
    } else {
        None
    };
    let mut w = BufWriter::with_capacity(1 << 20, &mut *out);
    let written = fs.write(&mut w);
    let stats = ahead.as_ref().map(Ahead::stats).unwrap_or_default();
    drop(ahead);
    written.map_err(bad(root))?;
    w.into_inner().map_err(|e| ArchiveError::Io {
        path: root.to_path_buf(),
        source: e.into_error(),
    })?;
    Ok(stats)
}

/// The backhand writer drops extended attributes: refuse a tree that has
/// any, naming the first files and the fix.
fn refuse_xattrs(root: &Path, items: &[super::walk::WalkItem]) -> Result<(), ArchiveError> {
    let mut refused = Vec::new();
    let mut count = 0;
    for item in items {
        let names = xattr::list(&item.abs).map_err(ArchiveError::io(&item.abs))?;
        if !names.is_empty() {
            count += 1;
            if refused.len() < XATTR_REPORT_LIMIT {
                refused.push((item.rel_path(), names));
            }
        }
    }
    if count > 0 {
        return Err(ArchiveError::Xattrs {
            root: root.to_path_buf(),
            format: "the backhand squashfs writer",
            count,
            files: refused,
            fix: "set `squashfs: {writer: mksquashfs}` to keep them (needs squashfs-tools), or remove them in the role that sets them (e.g. `setcap -r FILE`)".into(),
        });
    }
    Ok(())
}

fn write_mksquashfs(
    root: &Path,
    out: &mut File,
    opts: &SquashfsOptions,
) -> Result<(), ArchiveError> {
    // mksquashfs wants a path: give it ours through /proc (it reopens the same file).
    let dest = format!("/proc/{}/fd/{}", std::process::id(), out.as_raw_fd());
    let mut cmd = Cmd::new("mksquashfs")
        .arg(root)
        .arg(&dest)
        .args([
            "-noappend",
            "-no-progress",
            "-comp",
            opts.compressor.name(),
            "-b",
        ])
        .arg(opts.block_size.to_string())
        .env("SOURCE_DATE_EPOCH", opts.source_date_epoch.to_string());
    match (opts.compressor, opts.level) {
        (Compressor::Zstd | Compressor::Gzip, Some(level)) => {
            cmd = cmd.arg("-Xcompression-level").arg(level.to_string())
        }
        (Compressor::Zstd, None) => cmd = cmd.args(["-Xcompression-level", "3"]),
        (Compressor::Xz, Some(level)) if level != 6 => {
            return Err(ArchiveError::Options(format!(
                "mksquashfs has no xz level (asked for {level}); remove `level`"
            )))
        }
        _ => {}
    }
    cmd.run()?;
    out.seek(SeekFrom::End(0))
        .map_err(ArchiveError::io(&dest))?;
    Ok(())
}

#[cfg(test)]
#[path = "squashfs_tests.rs"]
mod tests;
