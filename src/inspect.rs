//! `mkimage inspect`: list the entries of a squashfs, cpio.gz or initrd.

use std::path::Path;

pub fn run(_file: &Path) -> anyhow::Result<()> {
    Err(crate::UsageError("`mkimage inspect` is not yet implemented".into()).into())
}
