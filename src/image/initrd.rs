//! `mkimage initrd --vars FILE`: the initramfs options from a build's plan —
//! the kernel of the basefs it names (or a kernel package that must match
//! it), the modules, firmware, compression and the init's defaults — then
//! the initramfs build, published with its kernel.

use super::{workdir::WorkDir, Job};
use crate::apt::AptSource;
use crate::artifact::{self, lookup, Entry, Manifest};
use crate::config::KernelChoice;
use crate::initramfs::{InitrdOptions, KernelSource};

pub fn build(job: &Job) -> anyhow::Result<Vec<Entry>> {
    let plan = job.plan;
    let manifest = Manifest::load(&plan.out)?;
    let basefs = lookup::find_base(plan.base.as_deref(), &plan.file, &plan.out, &manifest)?;
    let kernel = match &plan.initrd.kernel {
        KernelChoice::Basefs => KernelSource::Basefs(basefs.path.clone()),
        KernelChoice::Package(name) => KernelSource::Package { name: name.clone() },
    };
    let mut apt = AptSource::new(&plan.suite, &plan.cache_dir);
    apt.mirror = Some(plan.mirror.clone());
    apt.components = plan.components.clone();
    apt.apt_proxy = plan.apt_proxy.clone();
    // Scratch (the kernel and modules read out of the basefs) lives in a
    // build dir, so a killed build's leftovers are removed by the next.
    let mut work = WorkDir::create(job.sys, &plan.out, &plan.name, job.keep_build_dir)?;
    let mut opts = InitrdOptions::new(&plan.name, kernel, apt, &plan.out);
    opts.basefs = Some(basefs.path.clone());
    opts.kernel_package = basefs.entry.as_ref().and_then(|e| crate::initramfs::kernel_image::package_of(&e.packages, e.kernel_version.as_deref()?));
    if let Some(modules) = &plan.initrd.modules {
        opts.modules = modules.clone();
    }
    opts.firmware = plan.initrd.firmware;
    opts.compression = plan.initrd.compression.clone();
    opts.source_date_epoch = plan.source_date_epoch;
    opts.init_template = plan.initrd.init_template.clone();
    opts.defaults = plan.initrd.defaults.clone();
    opts.scratch = Some(work.path.clone());
    job.progress.step(format!("initrd `{}` from {}", plan.name, basefs.path.display()));
    let entries = crate::initramfs::build(&opts)?;
    artifact::record(&plan.out, &entries)?;
    work.succeeded();
    Ok(entries)
}
