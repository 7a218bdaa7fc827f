//! Debian's package archive as mkimage sees it: the mirror the build host's
//! own apt uses, the deb822 text format apt and dpkg speak, a private apt
//! that fetches single packages (kernel, busybox) into the shared cache, and
//! what a failed fetch from the mirror says (`failure`).

pub mod deb822;
pub mod failure;
pub mod fetcher;
pub mod index;
pub mod mirror;
pub mod packages;

pub use fetcher::{AptSource, Fetcher, Package, PREFERENCES};
pub use packages::extract;

pub use mirror::host_mirror;
