//! `mkimage initrd --vars FILE`: the initramfs options from a build's plan —
//! the kernel of the basefs it names (or a kernel package that must match
//! it), the modules, firmware, compression and the init's defaults — then
//! the initramfs build, published with its kernel.

use super::job::Job;
use super::workdir::WorkDir;
use crate::apt::AptSource;
use crate::artifact::{self, lookup, Entry, Manifest};
use crate::config::{KernelChoice, Plan};
use crate::initramfs::{InitrdOptions, KernelSource};
use crate::lockfile::Pinned;

/// The private apt of `plan`'s initrd build, with the lock's pins.
fn apt_source(plan: &Plan) -> anyhow::Result<(AptSource, Option<Pinned>)> {
    let mut apt = super::inputs::apt_source(plan);
    let pins = super::job::pins(plan)?;
    if let Some(pins) = &pins {
        apt.preferences = Some(pins.lock.preferences());
        apt.extra_sources.extend(pins.source_line());
    }
    Ok((apt, pins))
}

/// For `play`, while the builds before it run: fetch what `plan`'s initrd
/// build will take whatever its kernel (`initramfs::prefetch`), when it
/// was never built here and pins no versions. Best effort: what fails
/// here, the build fetches (and reports) itself.
pub fn prefetch(plan: &Plan) {
    let never_built = !plan.out.join(format!("{}.initrd", plan.name)).exists();
    if !never_built || plan.lock.is_some() {
        return;
    }
    let started = std::time::Instant::now();
    let fetched = apt_source(plan).and_then(|(apt, _)| crate::initramfs::prefetch(&apt));
    match fetched {
        Ok(()) => tracing::debug!(
            initrd = %plan.name,
            "prefetched its packages in {:.1}s",
            started.elapsed().as_secs_f64()
        ),
        Err(e) => {
            tracing::debug!(initrd = %plan.name, "prefetch failed (the build fetches them itself): {e:#}")
        }
    }
}

pub fn build(job: &Job) -> anyhow::Result<Vec<Entry>> {
    let plan = job.plan;
    let manifest = Manifest::load(&plan.out)?;
    let basefs = lookup::find_base(plan.base.as_deref(), &plan.file, &plan.out, &manifest)?;
    let inputs = super::inputs::initrd(plan, &basefs)?;
    let files = [
        format!("{}.vmlinuz", plan.name),
        format!("{}.initrd", plan.name),
    ];
    if let Some(entries) = super::job::up_to_date(job, &files, &inputs)? {
        return Ok(entries);
    }
    let kernel = match &plan.initrd.kernel {
        KernelChoice::Basefs => KernelSource::Basefs(basefs.path.clone()),
        KernelChoice::Package(name) => KernelSource::Package { name: name.clone() },
    };
    let (apt, pins) = apt_source(plan)?;
    // Scratch (the kernel and modules read out of the basefs) lives in a
    // build dir, so a killed build's leftovers are removed by the next.
    let mut work = WorkDir::for_job(job)?;
    let mut opts = InitrdOptions::new(&plan.name, kernel, apt, &plan.out);
    opts.basefs = Some(basefs.path.clone());
    opts.kernel_package = basefs.entry.as_ref().and_then(|e| {
        crate::initramfs::kernel_package::package_of(&e.packages, e.kernel_version.as_deref()?)
    });
    if let Some(modules) = &plan.initrd.modules {
        opts.modules = modules.clone();
    }
    opts.firmware = plan.initrd.firmware;
    opts.compression = plan.initrd.compression.clone();
    opts.source_date_epoch = plan.source_date_epoch;
    opts.init_template = plan.initrd.init_template.clone();
    opts.defaults = plan.initrd.defaults.clone();
    opts.scratch = Some(work.path.clone());
    job.progress.step(format!(
        "initrd `{}` from {}",
        plan.name,
        basefs.path.display()
    ));
    // The lock's pins are checked before the kernel and initrd are
    // published: a mismatch leaves the output dir as it was.
    let what = format!("initrd `{}`", plan.name);
    let check = |packages: &std::collections::BTreeMap<String, String>| match &pins {
        Some(pins) => pins.check_installed(&what, packages),
        None => Ok(()),
    };
    let mut entries = crate::initramfs::build_checked(&opts, &check)?;
    super::job::stamp(&mut entries, &inputs);
    artifact::record(&plan.out, &entries)?;
    work.succeeded();
    Ok(entries)
}
