//! Archive writers and readers: squashfs for the basefs, newc cpio (gzipped)
//! for overlays and the initrd. All output is deterministic: sorted entries,
//! ownership as in the tree, mtimes clamped to SOURCE_DATE_EPOCH.

pub mod cpio;
pub mod squashfs;
