//! The integration tests that need root but no VM, in one binary (one link
//! step): real mmdebstrap, chroot, mounts and namespaces — `mkimage basefs`,
//! `overlay`, `initrd` and incremental builds, the archives against the
//! kernel, a misbehaving mirror, a full disk, the README's quick start, the
//! proxyDHCP on a veth pair. As root: `cargo test --release --test root`
//! (one file: add its module name, e.g. `basefs_build::`).
//!
//! Each file is a module; the support modules beside the harnesses
//! (`tests/common`, `tests/*_support`) are shared by path.

#[path = "../common/mod.rs"]
mod common;
#[path = "../initrd_support/mod.rs"]
mod initrd_support;
#[path = "../mirror_support/mod.rs"]
mod mirror_support;
#[path = "../serve_support/mod.rs"]
mod serve_support;

mod apt_lists;
mod archive_overlay;
mod basefs_build;
mod basefs_modules;
mod dhcp_link;
mod disk_full;
mod flatten_layers;
mod incremental;
mod initrd_build;
mod initrd_firmware;
mod lock_file;
mod mirror_faults;
mod modules_depmod;
mod modules_warm;
mod overlay_build;
mod quickstart;
mod serve_dhcp;
mod serve_dhcp_uki;
mod squashfs_devices;
