//! Privileged system calls behind one small trait, as youki does it: the
//! builds describe their mounts through [`Sys`], so their mount plans (the
//! chroot's API filesystems, an overlay build's layers) are unit-tested
//! with the recording fake in [`record`], without root; only [`Real`] talks
//! to the kernel. Namespaces (`sandbox`) and the helpers every mount plan
//! uses (`mounts`: bind, tmpfs, loop images, unmount-all, a remove that
//! refuses to delete through a live mount) are built on it; `write_behind`
//! copies what a build made in RAM into the disk caches on a thread of its
//! own.
//!
//! Commands that run chrooted get their `chroot(2)` from `exec::Cmd`, in the
//! child between fork and exec; nothing else here changes root.

mod calls;
pub mod mounts;
#[cfg(test)]
pub mod record;
pub mod sandbox;
pub mod write_behind;

pub use calls::{deepest_first, Real, Sys, REAL};
pub use mounts::{bind, copy_tree, mem_available, mount_fs, remove_tree, unmount_all};
