//! Placeholder until the backhand writer lands: packs with mksquashfs.

use std::fs::File;
use std::path::Path;

#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct SquashfsOptions {
    #[serde(skip)]
    pub source_date_epoch: u64,
}

pub fn write_tree(root: &Path, out: &mut File, opts: &SquashfsOptions) -> anyhow::Result<()> {
    let tmp = tempfile::NamedTempFile::new()?;
    crate::exec::Cmd::new("mksquashfs").arg(root).arg(tmp.path()).args(["-noappend", "-comp", "zstd", "-quiet", "-mkfs-time", &opts.source_date_epoch.to_string(), "-all-time", &opts.source_date_epoch.to_string()]).run()?;
    std::io::copy(&mut File::open(tmp.path())?, out)?;
    Ok(())
}
