//! Pack a directory with mkimage's archive writers, for the benchmarks in
//! `bench/` (which time it against mksquashfs and `cpio | gzip`).
//!
//!     cargo run --release --example pack -- squashfs DIR OUT [zstd|gzip|xz|lz4] [LEVEL]
//!     cargo run --release --example pack -- cpio DIR OUT [GZIP_LEVEL]

use std::fs::File;
use std::path::Path;

use anyhow::{bail, Context};
use mkimage::archive::{squashfs, tree};

fn main() -> std::process::ExitCode {
    mkimage::progress::init_logging(0); // RUST_LOG=mkimage=debug shows the writers' statistics
    match pack() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pack: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn pack() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let epoch = mkimage::artifact::source_date_epoch(mkimage::artifact::now());
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["squashfs", dir, out, rest @ ..] => {
            let mut opts = squashfs::SquashfsOptions {
                source_date_epoch: epoch,
                ..Default::default()
            };
            if let Some(c) = rest.first() {
                opts.compressor = serde_yaml_ng::from_str(c)
                    .with_context(|| format!("unknown compressor {c}"))?;
            }
            if let Some(level) = rest.get(1) {
                opts.level = Some(level.parse().context("LEVEL must be a number")?);
            }
            let mut file = File::create(out).with_context(|| format!("cannot create {out}"))?;
            squashfs::write_tree(Path::new(dir), &mut file, &opts)?;
        }
        ["cpio", dir, out, rest @ ..] => {
            let level = rest
                .first()
                .map(|l| l.parse())
                .transpose()
                .context("GZIP_LEVEL must be a number")?
                .unwrap_or(6);
            let opts = tree::TreeOptions {
                source_date_epoch: epoch,
                ..Default::default()
            };
            let mut file = File::create(out).with_context(|| format!("cannot create {out}"))?;
            tree::write_tree_gz(Path::new(dir), &opts, &mut file, level)?;
        }
        _ => bail!(
            "usage: pack squashfs DIR OUT [COMPRESSOR] [LEVEL] | pack cpio DIR OUT [GZIP_LEVEL]"
        ),
    }
    Ok(())
}
