//! The integration tests that boot a VM (QEMU, TCG: no KVM here), in one
//! binary (one link step): the initrd, netboots through `mkimage serve`,
//! nginx and the proxyDHCP, the ISO, Secure Boot, per-node identity, BMCs.
//! As root: `cargo test --release --test qemu` (one file: add its module
//! name, e.g. `netboot_trixie::`). Its tests run one at a time
//! ([`one_at_a_time`]), as when each file was a binary of its own and boots
//! in two files never overlapped.
//!
//! Each file is a module; the support modules beside the harnesses
//! (`tests/common`, `tests/*_support`) are shared by path.

#[path = "../common/mod.rs"]
mod common;
#[path = "../initrd_support/mod.rs"]
mod initrd_support;
#[path = "../power_support/mod.rs"]
mod power_support;
#[path = "../serve_support/mod.rs"]
mod serve_support;

mod initrd_boot;
mod iso_boot;
mod iso_secure;
mod iso_static_network;
mod netboot_e2e;
mod netboot_identity;
mod netboot_trixie;
mod power_ipmi_e2e;
mod power_redfish_libvirt;
mod secure_boot;
mod serve_ipxe_qemu;

/// Held for the whole of each test here: one test at a time, whatever
/// `--test-threads` says (two TCG guests on two cores only slow each other
/// down past their timeouts). A test that failed does not stop the next.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
