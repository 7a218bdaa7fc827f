//! The basefs: bootstrap (or a cached tree, or a stage archive) → roles,
//! task by task in stacked layers over it → cleanup → squashfs of the
//! union, published atomically with `NAME.sha256` and a manifest entry.

use std::path::Path;

use anyhow::Context;

use super::job::Job;
use super::{cleanup, facts, workdir::WorkDir};
use crate::artifact::{self, Entry};
use crate::bootstrap::Source;
use crate::provision::layers::Store;
use crate::provision::stack::Stack;
use crate::sys::write_behind::WriteBehind;

/// The artifact file of a basefs build.
pub fn file_name(name: &str) -> String {
    format!("{name}.squashfs")
}

pub fn build(job: &Job) -> anyhow::Result<Vec<Entry>> {
    let plan = job.plan;
    let from = job.options.from.as_deref();
    let inputs = super::inputs::basefs(plan, from)?;
    if let Some(entries) = super::job::up_to_date(job, &[file_name(&plan.name)], &inputs)? {
        return Ok(entries);
    }
    let pins = super::job::pins(plan)?;
    let mut work = WorkDir::for_job(job)?;
    // The module cache is warmed while the tree is bootstrapped and
    // provisioned; the thread is stopped when the selection starts, and
    // joined at the end of the scope.
    let warm_up = super::modules_warm::WarmUp::new(plan, &work.path);
    let built = std::thread::scope(|s| {
        if let Some(w) = &warm_up {
            s.spawn(|| {
                let _span = tracing::info_span!("warm-up").entered();
                w.run();
            });
        }
        let built = build_in(
            job,
            (&work.path, work.behind()),
            pins.as_ref(),
            &inputs,
            warm_up.as_ref(),
        );
        if let Some(w) = &warm_up {
            w.stop();
        }
        built
    });
    let entry = built?;
    work.succeeded();
    Ok(vec![entry])
}

/// The tree in `work` (with its copier into the caches when in RAM):
/// bootstrapped, provisioned, its kernel cut down, cleaned, packed and
/// published with its manifest entry.
fn build_in(
    job: &Job,
    (work, behind): (&Path, Option<&WriteBehind>),
    pins: Option<&crate::lockfile::Pinned>,
    inputs: &crate::artifact::inputs::Inputs,
    warm_up: Option<&super::modules_warm::WarmUp>,
) -> anyhow::Result<Entry> {
    let plan = job.plan;
    let from = job.options.from.as_deref();
    let (_, packages) = super::inputs::packages(plan)?;
    // Layers are only worth keeping over a tree that is kept too.
    let cache = !job.options.no_cache && (plan.bootstrap_cache || from.is_some());
    let tree = crate::bootstrap::base_tree(
        plan,
        work,
        &Source {
            from,
            packages: &packages,
            cache,
            pins,
            behind,
        },
        job.progress,
    )?;
    let store = if cache {
        Some(Store::open(&plan.cache_dir)?)
    } else {
        None
    };
    let mut stack = Stack::new(
        job.sys,
        work,
        store,
        vec![tree.path.clone()],
        super::job::layers_key(plan, &[&tree.id]),
    )
    .write_behind(behind);
    super::job::run_roles(job, &mut stack, &packages, pins)?;
    let root = work.join("root");
    stack.mount_top(&work.join("final"), &root)?;
    let installed = facts::packages(&root);
    if let Some(pins) = pins {
        pins.check_installed(&format!("basefs `{}`", plan.name), &installed)?;
    }
    if let Some(save) = &job.options.save {
        job.progress
            .step(format!("save the provisioned tree as {}", save.display()));
        let size = crate::tree_tar::save(&root, save)?;
        job.progress
            .done(format!("{} ({:.1} MB)", save.display(), size as f64 / 1e6));
    }
    if let Some(w) = warm_up {
        w.stop();
    }
    select_modules(job, &root)?;
    // Hashed with the image still there (the initrd rebuilds when either
    // changes), then the image is left out.
    let kernel_hash = facts::kernel_hash(&root)?;
    drop_kernel_image(job, &root, &installed)?;

    job.progress.step("clean the tree");
    let removed = cleanup::clean(job.sys, &root, &plan.cleanup)?;
    job.progress.done(format!(
        "removed {removed} build-only and per-machine files"
    ));

    let mut entry = Entry {
        kind: "basefs".into(),
        name: plan.name.clone(),
        file: file_name(&plan.name),
        packages: installed,
        kernel_version: facts::kernel_versions(&root).pop(),
        kernel_hash,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    };
    super::job::stamp(std::slice::from_mut(&mut entry), inputs);
    pack(job, &root, entry)
}

/// Cut the kernel modules to the plan's `kernel_modules:` selection.
fn select_modules(job: &Job, root: &Path) -> anyhow::Result<()> {
    job.progress.step("select kernel modules");
    for s in super::kernel_trim::apply(root, &job.plan.kernel_modules, &job.plan.cache_dir)? {
        let needed = match s.needed.len() {
            0 => String::new(),
            n => format!(
                ", {n} of them only because kept ones need them (e.g. {})",
                s.needed[0]
            ),
        };
        job.progress.done(format!(
            "kernel {}: kept {} modules{needed}, dropped {} ({:.0} MB){}",
            s.version,
            s.kept,
            s.dropped,
            s.dropped_bytes as f64 / 1e6,
            match s.compressed {
                c if c.modules > 0 => format!(
                    ", stored as .ko.xz in {:.1}s ({} from the cache)",
                    s.compress_secs, c.cached
                ),
                _ => String::new(),
            }
        ));
    }
    Ok(())
}

/// Leave the kernel image out (the boot server hands the kernel out),
/// kept in the shared `.deb` cache for the initrd build that follows
/// (`initramfs::kernel_package::stash`), by the package it came from.
fn drop_kernel_image(
    job: &Job,
    root: &Path,
    installed: &std::collections::BTreeMap<String, String>,
) -> anyhow::Result<()> {
    for image in crate::archive::walk::expand(root, "boot/vmlinuz-*") {
        let kver = image.file_name().unwrap_or_default().to_string_lossy();
        let Some(kver) = kver.strip_prefix("vmlinuz-") else {
            continue;
        };
        if let Some(package) = crate::initramfs::kernel_package::package_of(installed, kver) {
            crate::initramfs::kernel_package::stash(&job.plan.package_cache(), &package, &image)?;
        }
    }
    let image = super::kernel_trim::drop_image(root)?;
    if image > 0 {
        job.progress.done(format!(
            "left out the kernel image ({:.1} MB): the initrd takes it from the kernel package",
            image as f64 / 1e6
        ));
    }
    Ok(())
}

/// Pack `root` as squashfs into the output dir and record it.
fn pack(job: &Job, root: &Path, mut entry: Entry) -> anyhow::Result<Entry> {
    let out = &job.plan.out;
    job.progress.step(format!("pack {}", entry.file));
    let started = std::time::Instant::now();
    let staged = artifact::staging_file(out, &entry.file)?;
    crate::archive::squashfs::write_tree(
        root,
        &mut staged.as_file().try_clone()?,
        &job.plan.squashfs,
    )
    .with_context(|| format!("cannot write {}", entry.file))?;
    job.progress.step(format!("verity {}", entry.file));
    let verity = crate::archive::verity::append_tree(&mut staged.as_file().try_clone()?)
        .with_context(|| format!("cannot append the dm-verity hash tree to {}", entry.file))?;
    job.progress.step(format!("publish {}", entry.file));
    let (size, sha256) = artifact::publish(out, &entry.file, staged.path())?;
    let _ = staged.keep();
    job.progress.done(format!(
        "{} ({:.1} MB) in {:.1}s",
        entry.file,
        size as f64 / 1e6,
        started.elapsed().as_secs_f64()
    ));
    entry.size = size;
    entry.sha256 = sha256;
    entry.verity = Some(verity);
    entry.build_time = artifact::now();
    artifact::record(out, std::slice::from_ref(&entry))?;
    Ok(entry)
}
