//! The basefs: bootstrap → roles → cleanup → squashfs, published atomically
//! with `NAME.sha256` and a manifest entry.

use std::path::Path;

use anyhow::Context;

use super::{cleanup, facts, workdir::WorkDir, Job};
use crate::artifact::{self, Entry};
use crate::provision::{self, Chroot, ChrootOptions};

/// The artifact file of a basefs build.
pub fn file_name(name: &str) -> String {
    format!("{name}.squashfs")
}

pub fn build(job: &Job) -> anyhow::Result<Vec<Entry>> {
    let plan = job.plan;
    let mut work = WorkDir::create(job.sys, &plan.out, &plan.name, job.keep_build_dir)?;
    let root = work.path.join("root");
    std::fs::create_dir_all(&root)?;

    crate::bootstrap::prepare(plan, &root, job.progress)?;
    run_roles(job, &root)?;
    select_modules(job, &root)?;

    job.progress.step("clean the tree");
    let removed = cleanup::clean(job.sys, &root, &plan.cleanup)?;
    job.progress.done(format!("removed {removed} build-only and per-machine files"));

    let entry = pack(job, &root, Entry {
        kind: "basefs".into(),
        name: plan.name.clone(),
        file: file_name(&plan.name),
        inputs_hash: artifact::inputs::hash(&plan.context, &plan.provisioners_dir, &plan.provisioners),
        packages: facts::packages(&root),
        kernel_version: facts::kernel_versions(&root).pop(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    })?;
    work.succeeded();
    Ok(vec![entry])
}

/// Run the plan's roles in a chroot prepared on `root`.
pub fn run_roles(job: &Job, root: &Path) -> anyhow::Result<()> {
    let plan = job.plan;
    if plan.provisioners.is_empty() {
        return Ok(());
    }
    let opts = ChrootOptions { apt_proxy: plan.apt_proxy.clone(), package_cache: Some(plan.package_cache()) };
    let chroot = Chroot::enter(job.sys, root, &opts)?;
    let ctx = provision::Context {
        root,
        sys: job.sys,
        vars: &plan.context,
        progress: job.progress,
        source_date_epoch: plan.source_date_epoch,
        templater: Default::default(),
    };
    for name in &plan.provisioners {
        let role = provision::load_role(&plan.provisioners_dir, name)?;
        role.run(&ctx)?;
    }
    chroot.leave()
}

/// Cut the kernel modules to the plan's `kernel_modules:` selection, and
/// leave the kernel image out.
fn select_modules(job: &Job, root: &Path) -> anyhow::Result<()> {
    job.progress.step("select kernel modules, leave out the kernel image");
    for s in super::kernel::apply(root, &job.plan.kernel_modules, &job.plan.cache_dir)? {
        let needed = match s.needed.len() {
            0 => String::new(),
            n => format!(", {n} of them only because kept ones need them (e.g. {})", s.needed[0]),
        };
        job.progress.done(format!(
            "kernel {}: kept {} modules{needed}, dropped {} ({:.0} MB){}",
            s.version,
            s.kept,
            s.dropped,
            s.dropped_bytes as f64 / 1e6,
            match s.compressed {
                c if c.modules > 0 => format!(", stored as .ko.xz in {:.1}s ({} from the cache)", s.compress_secs, c.cached),
                _ => String::new(),
            }
        ));
    }
    let image = super::kernel::drop_image(root)?;
    if image > 0 {
        job.progress.done(format!("left out the kernel image ({:.1} MB): the initrd takes it from the kernel package", image as f64 / 1e6));
    }
    Ok(())
}

/// Pack `root` as squashfs into the output dir and record it.
fn pack(job: &Job, root: &Path, mut entry: Entry) -> anyhow::Result<Entry> {
    let out = &job.plan.out;
    job.progress.step(format!("pack {}", entry.file));
    let started = std::time::Instant::now();
    let staged = artifact::staging_file(out, &entry.file)?;
    crate::archive::squashfs::write_tree(root, &mut staged.as_file().try_clone()?, &job.plan.squashfs)
        .with_context(|| format!("cannot write {}", entry.file))?;
    let verity = crate::archive::verity::append_tree(&mut staged.as_file().try_clone()?)
        .with_context(|| format!("cannot append the dm-verity hash tree to {}", entry.file))?;
    let (size, sha256) = artifact::publish(out, &entry.file, staged.path())?;
    let _ = staged.keep();
    job.progress.done(format!("{} ({:.1} MB) in {:.1}s", entry.file, size as f64 / 1e6, started.elapsed().as_secs_f64()));
    entry.size = size;
    entry.sha256 = sha256;
    entry.verity = Some(verity);
    entry.build_time = artifact::now();
    artifact::record(out, std::slice::from_ref(&entry))?;
    Ok(entry)
}
