//! `kernel_modules:` — which kernel modules the basefs ships. Every netbooted
//! machine downloads the whole basefs into RAM, and Debian's kernel package
//! brings ~400 MB of modules, most of them for hardware a discovery or
//! provisioning microkernel never meets (GPUs, sound, cameras, wireless). The
//! selection is a list of path globs under `lib/modules/VERSION/kernel/`;
//! `image::modules` applies it to the built tree and re-runs depmod.

use serde::Deserialize;

/// The default: every module goes except those kept below. Each pattern is
/// a path under `lib/modules/VERSION/kernel/` (components are shell globs;
/// a directory covers everything under it); the most specific matching
/// pattern decides, `keep` winning a tie.
pub const DEFAULT_DROP: &[&str] = &[
    "*",
    "arch/x86/kvm",
    "lib/test_*",
    // Radio and legacy links among the network drivers and protocols.
    "drivers/net/wireless",
    "drivers/net/wwan",
    "drivers/net/can",
    "drivers/net/ieee802154",
    "drivers/net/hamradio",
    "drivers/net/fddi",
    "drivers/net/arcnet",
    "drivers/net/wan",
    "net/wireless",
    "net/mac80211",
    "net/mac802154",
    "net/ieee802154",
    "net/bluetooth",
    "net/nfc",
    "net/can",
    "net/atm",
    "net/batman-adv",
    "net/dccp",
    "net/rds",
    "net/smc",
    "net/tipc",
    // Soft RDMA, RDMA storage protocols and storage targets (serving, not using, storage).
    "drivers/infiniband/sw",
    "drivers/infiniband/ulp",
    "drivers/nvme/target",
    // USB devices a lab machine is not, or does not use.
    "drivers/usb/gadget",
    "drivers/usb/serial",
    "drivers/usb/atm",
    "drivers/usb/usbip",
    "drivers/usb/misc/usbtest.ko",
];

/// Kept by default: NICs (wired, InfiniBand, USB, virtual) and network
/// protocols, storage controllers, RAID and device-mapper, filesystems,
/// hardware monitoring and management (hwmon, IPMI, EDAC, SMBus, ACPI,
/// thermal, watchdogs, TPM, MEI), input, and the buses, crypto and library
/// modules under them. Not kept: GPUs, sound, cameras and TV, radios,
/// industrial I/O, staging, test modules, KVM.
pub const DEFAULT_KEEP: &[&str] = &[
    "arch/x86",
    "block",
    "crypto",
    "lib",
    "mm",
    "fs",
    "net",
    "drivers/net",
    "drivers/infiniband",
    "drivers/infiniband/ulp/ipoib",
    "drivers/scsi",
    "drivers/ata",
    "drivers/nvme",
    "drivers/md",
    "drivers/block",
    "drivers/message",
    "drivers/nvdimm",
    "drivers/dax",
    "drivers/mmc",
    "drivers/ufs",
    "drivers/hwmon",
    "drivers/char",
    "drivers/edac",
    "drivers/i2c",
    "drivers/acpi",
    "drivers/thermal",
    "drivers/powercap",
    "drivers/cpufreq",
    "drivers/watchdog",
    "drivers/platform/x86",
    "drivers/firmware",
    "drivers/misc",
    "drivers/input",
    "drivers/hid",
    "drivers/usb",
    "drivers/tty",
    "drivers/pci",
    "drivers/virtio",
    "drivers/xen",
    "drivers/hv",
];

/// The validated selection. A module file is removed when the most specific
/// pattern matching its path (or a directory above it) is a `drop` one —
/// unless a module that stays depends on it. `compress`: the kept modules
/// are stored as `.ko.xz` (off by default: in a zstd squashfs of 1 MiB
/// blocks they save 0.6% of the basefs for 10 CPU-seconds a cold build).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleSelection {
    pub drop: Vec<String>,
    pub keep: Vec<String>,
    pub compress: bool,
}

impl Default for ModuleSelection {
    fn default() -> Self {
        let list = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        ModuleSelection {
            drop: list(DEFAULT_DROP),
            keep: list(DEFAULT_KEEP),
            compress: false,
        }
    }
}

impl ModuleSelection {
    /// Nothing dropped.
    pub fn keep_all() -> Self {
        ModuleSelection {
            drop: Vec::new(),
            keep: Vec::new(),
            compress: false,
        }
    }

    /// Is the module at `rel` (relative to `kernel/`) dropped by the patterns?
    pub fn drops(&self, rel: &str) -> bool {
        let depth = |list: &[String]| {
            list.iter()
                .filter(|p| {
                    crate::archive::walk::path_pattern_matches(p, rel)
                        || crate::archive::walk::path_pattern_matches(p, strip_compression(rel))
                })
                .map(|p| p.split('/').filter(|c| !c.is_empty()).count())
                .max()
        };
        match (depth(&self.drop), depth(&self.keep)) {
            (Some(d), Some(k)) => d > k,
            (Some(_), None) => true,
            _ => false,
        }
    }
}

/// `a.ko.xz` → `a.ko` (patterns may name a module without its compression).
fn strip_compression(rel: &str) -> &str {
    [".xz", ".zst", ".gz"]
        .iter()
        .find_map(|ext| rel.strip_suffix(ext))
        .unwrap_or(rel)
}

/// `kernel_modules:` as written in a vars file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleKeys {
    /// Start from `DEFAULT_DROP` and `DEFAULT_KEEP` (default true).
    pub defaults: Option<bool>,
    #[serde(default)]
    pub drop: Vec<String>,
    #[serde(default)]
    pub keep: Vec<String>,
    /// `none` (default) or `xz`.
    pub compress: Option<String>,
}

/// Why a pattern is refused, or `None` when it is fine.
pub fn pattern_problem(p: &str) -> Option<&'static str> {
    if p.trim().is_empty() {
        Some("is empty")
    } else if p.starts_with('/') {
        Some("must be relative to lib/modules/VERSION/kernel/ (no leading `/`), e.g. drivers/gpu")
    } else if p == "kernel" || p.starts_with("kernel/") {
        Some("is already relative to lib/modules/VERSION/kernel/: leave out the leading `kernel/`")
    } else if p.split('/').any(|c| c == "..") {
        Some("must not contain `..`")
    } else {
        None
    }
}

impl ModuleKeys {
    /// The selection these keys give.
    pub fn selection(self) -> ModuleSelection {
        let mut s = if self.defaults.unwrap_or(true) {
            ModuleSelection::default()
        } else {
            ModuleSelection::keep_all()
        };
        s.drop.extend(self.drop);
        s.keep.extend(self.keep);
        s.compress = self.compress.as_deref() == Some("xz");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_drops_subsystems_and_keeps_nics_storage_and_input() {
        let s = ModuleSelection::default();
        for dropped in [
            "drivers/gpu/drm/amd/amdgpu/amdgpu.ko",
            "sound/core/snd.ko",
            "drivers/net/wireless/intel/iwlwifi/iwlwifi.ko",
            "lib/test_bpf.ko",
            "drivers/media/rc/rc-core.ko.xz",
            "drivers/infiniband/ulp/srp/ib_srp.ko",
            "arch/x86/kvm/kvm.ko",
        ] {
            assert!(s.drops(dropped), "{dropped} should be dropped");
        }
        for kept in [
            "drivers/net/ethernet/intel/e1000e/e1000e.ko",
            "drivers/net/usb/r8152.ko",
            "drivers/infiniband/hw/mlx5/mlx5_ib.ko",
            "drivers/infiniband/ulp/ipoib/ib_ipoib.ko",
            "drivers/scsi/megaraid/megaraid_sas.ko",
            "drivers/md/raid456.ko",
            "fs/xfs/xfs.ko.xz",
            "drivers/hwmon/coretemp.ko",
            "drivers/char/ipmi/ipmi_si.ko",
            "drivers/input/keyboard/atkbd.ko",
            "drivers/hid/usbhid/usbhid.ko",
            "lib/libcrc32c.ko",
        ] {
            assert!(!s.drops(kept), "{kept} should stay");
        }
    }

    #[test]
    fn keep_wins_and_defaults_can_be_turned_off() {
        let keys = ModuleKeys {
            defaults: None,
            drop: vec!["drivers/scsi/*/qla*".into()],
            keep: vec!["drivers/gpu/drm/ast".into(), "sound".into()],
            compress: None,
        };
        let s = keys.selection();
        assert!(!s.drops("drivers/gpu/drm/ast/ast.ko"));
        assert!(s.drops("drivers/gpu/drm/nouveau/nouveau.ko"));
        assert!(
            s.drops("drivers/scsi/qla2xxx/qla2xxx.ko"),
            "a more specific drop wins over keep drivers/scsi"
        );
        assert!(!s.drops("sound/core/snd.ko"), "a keep ties `*` and wins");
        assert!(!s.compress, "modules stay plain .ko unless asked");
        let all = ModuleKeys {
            defaults: Some(false),
            drop: vec![],
            keep: vec![],
            compress: Some("xz".into()),
        }
        .selection();
        assert!(!all.drops("sound/core/snd.ko") && all.compress);
    }

    #[test]
    fn bad_patterns() {
        assert!(pattern_problem("drivers/gpu").is_none());
        assert!(pattern_problem("lib/test_*").is_none());
        assert!(pattern_problem("/drivers/gpu").is_some());
        assert!(pattern_problem("kernel/drivers/gpu")
            .unwrap()
            .contains("kernel/"));
        assert!(pattern_problem("drivers/../fs").is_some());
        assert!(pattern_problem(" ").is_some());
    }
}
