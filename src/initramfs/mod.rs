//! The initrd build: a kernel (`NAME.vmlinuz`) and a small newc initramfs
//! (`NAME.initrd`) assembled by mkimage itself — busybox-static, the kernel
//! modules for network/loop/squashfs/overlay with their dependency closure
//! and firmware, and the `init` rendered from `initrd/init.j2` — no
//! initramfs-tools, no dracut, nothing from the build host.
//!
//! The build reads top to bottom as named steps: locate kernel, resolve
//! modules, collect firmware, fetch busybox, render init, pack, publish.

pub mod busybox;
pub mod dmsetup;
pub mod firmware;
pub mod inflate;
pub mod kernel_package;
pub mod kernel_source;
pub mod keyutils;
pub mod pack;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;

pub use crate::config::initrd::{Compression, InitDefaults};
pub use kernel_source::KernelSource;

use crate::apt::{AptSource, Fetcher};
use crate::artifact::{self, Entry};
use crate::kmod;

/// The NICs of real lab machines and the boot path (loop, squashfs, overlay).
pub const DEFAULT_MODULES: &[&str] = &[
    "virtio_net",
    "virtio_pci",
    "e1000",
    "e1000e",
    "igb",
    "ixgbe",
    "i40e",
    "ice",
    "bnxt_en",
    "tg3",
    "bnx2",
    "r8169",
    "mlx4_en",
    "mlx5_core",
    "vmxnet3",
    "loop",
    "squashfs",
    "overlay",
    "dm_verity",
    "af_packet",
    // The boot medium of an offline ISO: CD-ROM, disk or USB stick, and its filesystem.
    "isofs",
    "sr_mod",
    "sd_mod",
    "ata_piix",
    "ahci",
    "usb_storage",
    "xhci_pci",
    "ehci_pci",
];

/// Everything an initrd build needs (the config loader fills it from vars).
#[derive(Debug, Clone)]
pub struct InitrdOptions {
    /// Artifact name: `NAME.vmlinuz`, `NAME.initrd`.
    pub name: String,
    pub kernel: KernelSource,
    /// The basefs this initrd will boot (tree or squashfs): its
    /// `/lib/modules/VERSION` must match a packaged kernel.
    pub basefs: Option<PathBuf>,
    /// Module names to include (with their dependencies); see
    /// `DEFAULT_MODULES`.
    pub modules: Vec<String>,
    /// The basefs's kernel package (name, version), whose image is used
    /// when the basefs ships none.
    pub kernel_package: Option<(String, String)>,
    /// Where the firmware files the modules declare come from.
    pub firmware: firmware::Source,
    pub compression: Compression,
    /// Mirror, suite, proxy and `.deb` cache for the kernel and busybox packages.
    pub apt: AptSource,
    pub source_date_epoch: u64,
    /// The init template (default `initrd/init.j2`); the other files the
    /// init needs (`udhcpc.script`) are read from the same directory.
    pub init_template: PathBuf,
    /// Values the init falls back to when the cmdline does not say.
    pub defaults: InitDefaults,
    pub out_dir: PathBuf,
    /// Where files read out of a squashfs basefs are put while building
    /// (default: a temp dir in `out_dir`).
    pub scratch: Option<PathBuf>,
}

impl InitrdOptions {
    /// Defaults for everything but the name, kernel source, apt source and output dir.
    pub fn new(name: &str, kernel: KernelSource, apt: AptSource, out_dir: &Path) -> Self {
        InitrdOptions {
            name: name.to_string(),
            kernel,
            basefs: None,
            kernel_package: None,
            modules: DEFAULT_MODULES.iter().map(|s| s.to_string()).collect(),
            firmware: firmware::Source::Debian,
            compression: Compression::Gzip { level: 6 },
            apt,
            source_date_epoch: artifact::source_date_epoch(0),
            init_template: PathBuf::from("initrd/init.j2"),
            defaults: InitDefaults::default(),
            out_dir: out_dir.to_path_buf(),
            scratch: None,
        }
    }
}

/// Build and publish `NAME.vmlinuz` and `NAME.initrd` (each with its
/// `.sha256`) into `out_dir`; returns their manifest entries for the caller
/// to `artifact::record`.
pub fn build(opts: &InitrdOptions) -> anyhow::Result<Vec<Entry>> {
    build_checked(opts, &|_| Ok(()))
}

/// A check of the packages (name → version) an initrd is made of, run
/// after it is packed and before anything is published: the lock file's
/// pins. When it fails, the staged files are dropped and the output dir
/// is as it was.
pub type PackageCheck<'a> =
    &'a dyn Fn(&std::collections::BTreeMap<String, String>) -> anyhow::Result<()>;

/// `build`, with `check` run before the kernel and initrd are published.
pub fn build_checked(opts: &InitrdOptions, check: PackageCheck) -> anyhow::Result<Vec<Entry>> {
    if opts.defaults.onfail != "shell" && opts.defaults.onfail != "reboot" {
        return Err(crate::UsageError(format!(
            "onfail: `{}` is not `shell` or `reboot`",
            opts.defaults.onfail
        ))
        .into());
    }
    std::fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("cannot create {}", opts.out_dir.display()))?;
    let apt = &with_firmware_component(&opts.apt);
    step("locate kernel");
    let at = kernel_source::Locate {
        source: &opts.kernel,
        basefs: opts.basefs.as_deref(),
        firmware: opts.firmware != firmware::Source::None,
        scratch: opts.scratch.as_deref().unwrap_or(&opts.out_dir),
        image_package: opts.kernel_package.as_ref(),
        image_stash: Some(&opts.apt.cache_dir.join("debs")),
    };
    let kernel = kernel_source::locate(&at, &|| Fetcher::new(apt))?;
    tracing::info!(version = %kernel.version, "kernel located");
    step("resolve modules");
    let order = resolve_modules(&kernel, &opts.modules)?;
    let parts = Parts::fetch(opts, apt, &kernel, &order)?;
    step("render init");
    let init = InitFiles::read(opts, &kernel.version)?;
    step("pack initrd");
    let initrd_file = format!("{}.initrd", opts.name);
    let vmlinuz_file = format!("{}.vmlinuz", opts.name);
    let staged = pack_staged(opts, &initrd_file, &kernel, &order, &parts, &init)?;
    let staged_kernel = artifact::staging_file(&opts.out_dir, &vmlinuz_file)?;
    std::fs::copy(&kernel.vmlinuz, staged_kernel.path())
        .with_context(|| format!("cannot copy {}", kernel.vmlinuz.display()))?;

    step("publish");
    let packages = parts.packages(&kernel);
    check(&packages)?;
    let (ksize, ksha) = artifact::publish(&opts.out_dir, &vmlinuz_file, &keep(staged_kernel)?)?;
    let (isize, isha) = artifact::publish(&opts.out_dir, &initrd_file, &keep(staged)?)?;
    let module_names: Vec<String> = order.iter().map(|m| m.name.clone()).collect();
    let inputs_hash = inputs_hash(opts, &ksha, &kernel, &module_names, &parts, &init);
    let common = Entry {
        name: opts.name.clone(),
        kernel_version: Some(kernel.version.clone()),
        inputs_hash,
        packages,
        build_time: artifact::now(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        ..Default::default()
    };
    Ok(vec![
        Entry {
            kind: "kernel".into(),
            file: vmlinuz_file,
            size: ksize,
            sha256: ksha,
            ..common.clone()
        },
        Entry {
            kind: "initrd".into(),
            file: initrd_file,
            size: isize,
            sha256: isha,
            modules: module_names,
            ..common
        },
    ])
}

/// What the kernel and initrd were made from, as one hash: the kernel's
/// sha, its version, the modules, the compression and the packed parts.
fn inputs_hash(
    opts: &InitrdOptions,
    ksha: &str,
    kernel: &kernel_source::Kernel,
    module_names: &[String],
    parts: &Parts,
    init: &InitFiles,
) -> String {
    artifact::sha256_bytes(
        format!(
            "{ksha}\n{}\n{}\n{:?}\n{}\n{}\n{:?}\n{:?}\n{:?}\n{:?}\n",
            kernel.version,
            module_names.join(","),
            opts.compression,
            parts.tools.busybox.version,
            init.sha,
            parts.tools.dmsetup.versions,
            parts.tools.inflate.versions,
            parts.tools.keyutils.versions,
            parts.firmware.packages
        )
        .as_bytes(),
    )
}

/// The initrd packed into a staged file in the output dir.
fn pack_staged(
    opts: &InitrdOptions,
    initrd_file: &str,
    kernel: &kernel_source::Kernel,
    order: &[kmod::Module],
    parts: &Parts,
    init: &InitFiles,
) -> anyhow::Result<artifact::Staged> {
    let mut extra = parts.tools.inflate.files.clone();
    extra.extend(parts.tools.keyutils.files.clone());
    extra.extend(parts.firmware.licenses.clone());
    let entries = pack::entries(&pack::Contents {
        kernel,
        modules: order,
        firmware: &parts.firmware.files,
        busybox: &parts.tools.busybox,
        dmsetup: &parts.tools.dmsetup,
        extra: &extra,
        init: init.init.clone().into_bytes(),
        udhcpc: init.udhcpc.clone(),
        scripts: &init.scripts,
        mtime: opts.source_date_epoch,
    })?;
    let staged = artifact::staging_file(&opts.out_dir, initrd_file)?;
    pack::write(entries, staged.as_file(), &opts.compression)
        .with_context(|| format!("cannot write {initrd_file}"))?;
    Ok(staged)
}

/// One step of the build, logged and timed.
fn step(name: &str) {
    tracing::info!("step: {name}");
    crate::timings::mark(&format!("initrd: {name}"));
}

/// One source for every package of the build, with the firmware component
/// and its Contents index whatever `firmware:` says: a private apt whose
/// source lines change drops its lists, under any other build on the same
/// cache that is using them. (The basefs's module warm-up takes its kernel
/// package through this apt too: one set of lists for both.)
pub fn with_firmware_component(apt: &AptSource) -> AptSource {
    let mut apt = apt.clone();
    let component = firmware::COMPONENT.to_string();
    if !apt.components.contains(&component) {
        apt.components.push(component.clone());
    }
    apt.contents = vec![component];
    apt
}

/// Fill the private apt's cache with what every initrd build of `apt`
/// takes whatever its kernel (the package lists, busybox, dmsetup,
/// libdeflate and keyctl, fetched and unpacked), so that `play` can do it
/// while the basefs is built; the build then finds them there. Under the
/// cache's lock, as the build's own fetches are.
pub fn prefetch(apt: &AptSource) -> anyhow::Result<()> {
    Tools::fetch(&Fetcher::new(&with_firmware_component(apt))?, &|_| {})?;
    Ok(())
}

/// The init's tools, each from its Debian package: one list for the build
/// and for `prefetch`.
struct Tools {
    busybox: busybox::Busybox,
    dmsetup: dmsetup::DmSetup,
    inflate: inflate::Inflate,
    keyutils: keyutils::KeyUtils,
}

impl Tools {
    /// Fetch each (unpacked into the cache), calling `step` before each.
    fn fetch(fetcher: &Fetcher, step: &dyn Fn(&str)) -> anyhow::Result<Tools> {
        step("fetch busybox");
        let busybox = busybox::fetch(fetcher)?;
        step("fetch dmsetup");
        let dmsetup = dmsetup::fetch(fetcher)?;
        step("fetch libdeflate-gunzip");
        let inflate = inflate::fetch(fetcher)?;
        step("fetch keyctl");
        let keyutils = keyutils::fetch(fetcher)?;
        Ok(Tools {
            busybox,
            dmsetup,
            inflate,
            keyutils,
        })
    }
}

/// What the initrd holds besides the kernel and its modules, each from
/// its Debian package.
struct Parts {
    firmware: firmware::Collected,
    tools: Tools,
}

impl Parts {
    fn fetch(
        opts: &InitrdOptions,
        apt: &AptSource,
        kernel: &kernel_source::Kernel,
        order: &[kmod::Module],
    ) -> anyhow::Result<Parts> {
        step("collect firmware");
        let in_basefs = if opts.firmware != firmware::Source::None {
            collect_firmware(kernel, order)?
        } else {
            Vec::new()
        };
        let firmware = firmware::complete(order, in_basefs, opts.firmware, &|| Fetcher::new(apt))?;
        let tools = Tools::fetch(&Fetcher::new(apt)?, &step)?;
        Ok(Parts { firmware, tools })
    }

    /// Every package the initrd is made of (name → version).
    fn packages(&self, kernel: &kernel_source::Kernel) -> BTreeMap<String, String> {
        let mut packages = BTreeMap::new();
        if let Some((name, version)) = &kernel.package {
            packages.insert(name.clone(), version.clone());
        }
        packages.insert(
            busybox::PACKAGE.to_string(),
            self.tools.busybox.version.clone(),
        );
        packages.extend(self.tools.dmsetup.versions.clone());
        packages.extend(self.tools.inflate.versions.clone());
        packages.extend(self.tools.keyutils.versions.clone());
        packages.extend(self.firmware.packages.clone());
        packages
    }
}

/// The init and the files it reads, and their combined sha256.
struct InitFiles {
    init: String,
    udhcpc: Vec<u8>,
    scripts: Vec<(String, Vec<u8>)>,
    sha: String,
}

impl InitFiles {
    fn read(opts: &InitrdOptions, version: &str) -> anyhow::Result<InitFiles> {
        let init = pack::render_init(&opts.init_template, &opts.name, version, &opts.defaults)?;
        let udhcpc = opts.init_template.with_file_name("udhcpc.script");
        let udhcpc =
            std::fs::read(&udhcpc).with_context(|| format!("cannot read {}", udhcpc.display()))?;
        let scripts = pack::read_scripts(&opts.init_template)?;
        let mut all = artifact::sha256_bytes(init.as_bytes()).into_bytes();
        for (name, bytes) in &scripts {
            all.extend_from_slice(name.as_bytes());
            all.extend_from_slice(bytes);
        }
        let sha = artifact::sha256_bytes(&all);
        Ok(InitFiles {
            init,
            udhcpc,
            scripts,
            sha,
        })
    }
}

/// The modules' dependency closure in load order (from a squashfs basefs,
/// only the files needed are extracted).
fn resolve_modules(
    kernel: &kernel_source::Kernel,
    wanted: &[String],
) -> anyhow::Result<Vec<kmod::Module>> {
    let Some(lazy) = &kernel.lazy else {
        return kmod::KernelModules::open(&kernel.modules_dir, &kernel.version)?.closure(wanted);
    };
    let moddir = kernel
        .modules_dir
        .strip_prefix(lazy.root())
        .unwrap_or(&kernel.modules_dir)
        .to_string_lossy()
        .to_string();
    let listing = lazy.files_under(&moddir);
    let fetch = |rels: &[PathBuf]| {
        lazy.materialize(
            &rels
                .iter()
                .map(|r| format!("{moddir}/{}", r.display()))
                .collect::<Vec<_>>(),
        )
    };
    let mods = kmod::KernelModules::listed(
        &kernel.modules_dir,
        &kernel.version,
        &listing,
        Box::new(fetch),
    );
    mods.closure(wanted)
}

/// The firmware files the modules declare that the kernel tree has.
fn collect_firmware(
    kernel: &kernel_source::Kernel,
    order: &[kmod::Module],
) -> anyhow::Result<Vec<pack::Firmware>> {
    if let Some(lazy) = &kernel.lazy {
        let wanted: Vec<String> = order
            .iter()
            .flat_map(|m| m.firmware.iter())
            .flat_map(|fw| ["usr/lib/firmware", "lib/firmware"].map(|d| format!("{d}/{fw}")))
            .flat_map(|p| ["", ".xz", ".zst"].map(|ext| format!("{p}{ext}")))
            .collect();
        lazy.materialize(&wanted)?;
    }
    Ok(pack::find_firmware(order, &kernel.firmware_dirs))
}

fn keep(staged: artifact::Staged) -> anyhow::Result<PathBuf> {
    let (_file, path) = staged.keep().context("cannot keep the staged file")?;
    Ok(path)
}
