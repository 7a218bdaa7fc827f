//! Archive writers and readers: squashfs for the basefs, newc cpio (gzipped)
//! for overlays and the initrd. All output is deterministic: sorted entries,
//! ownership as in the tree, mtimes clamped to SOURCE_DATE_EPOCH.
//!
//! This file holds what the formats share: the error type and the entry
//! listing that `inspect` prints; `walk` has the one tree walker and glob
//! matcher that exclude lists, cleanup and extraction patterns use.

pub mod cpio;
mod error;
pub mod gzip;
mod listing;
pub mod squashfs;
mod squashfs_par;
pub mod squashfs_read;
pub mod tree;
pub mod verity;
pub mod walk;
pub mod xattr;

pub use error::{ArchiveError, XATTR_REPORT_LIMIT};
pub use listing::{mode_string, ListEntry};
pub use squashfs::{write_tree, Compressor, SquashfsOptions, SquashfsWriter};
pub use squashfs_read::{extract, read_entries, read_file};
pub use tree::{tree_entries, write_tree_gz, TreeOptions};
pub use walk::{glob_match, path_pattern_matches, walk, WalkItem};
pub use xattr::scan_xattrs;
