//! `libdeflate-gunzip` for the initrd: the init inflates each overlay with
//! it. Measured in the TCG VM on the 20 MB discovery overlay, busybox's
//! gunzip took 4.5–7 s and libdeflate 1.1–1.5 s, and inflating into a file
//! and then unpacking it took a third of the time of `gunzip | cpio` (a
//! pipe between two processes costs a context switch per 64 KiB there).
//! From Debian's `libdeflate-tools` (bookworm's links libdeflate
//! statically; trixie's needs `libdeflate0`'s libdeflate.so.0), through the
//! configured mirror and cache.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::apt::Fetcher;

/// The packages: the tool, and the libraries of its closure (bookworm and trixie).
pub const PACKAGES: &[&str] = &["libdeflate-tools", "libdeflate0", "libc6"];

/// Where the init finds it (on its PATH).
pub const BINARY: &str = "usr/bin/libdeflate-gunzip";

/// libdeflate-gunzip and the files it needs, by initrd path.
pub struct Inflate {
    pub files: BTreeMap<String, PathBuf>,
    pub versions: BTreeMap<String, String>,
}

pub fn fetch(fetcher: &Fetcher) -> anyhow::Result<Inflate> {
    let (files, versions) = super::dmsetup::fetch_tool(fetcher, PACKAGES, BINARY, &[BINARY])?;
    Ok(Inflate { files, versions })
}
