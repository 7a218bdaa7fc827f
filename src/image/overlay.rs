//! Overlays: roles run on top of the mounted basefs (and parent overlays),
//! task by task in stacked layers; what they changed — the task layers
//! merged into one overlayfs upper dir — is cleaned by the same never-ship
//! table as the basefs and packed as a gzipped newc cpio, with whiteouts
//! kept and opaque dirs expanded so the initrd can unpack it onto a tmpfs
//! upper without xattrs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::job::Job;
use super::{cleanup, facts, flatten, workdir::WorkDir};
use crate::archive::tree::{tree_entries, TreeOptions};
use crate::artifact::lookup::{self, Input};
use crate::artifact::{self, Entry, Manifest};
use crate::provision::layers::Store;
use crate::provision::stack::Stack;
use crate::sys::{self, Sys};

/// The artifact file of an overlay build.
pub fn file_name(name: &str) -> String {
    format!("{name}.cpio.gz")
}

/// Loop-mount the basefs and unpack the parents in `work`: the lower dirs
/// of an overlay build, top-most first (the last parent, …, the first, the
/// base).
pub fn mount_lowers(
    sys: &dyn Sys,
    work: &Path,
    base: &Path,
    parents: &[PathBuf],
) -> anyhow::Result<Vec<PathBuf>> {
    let base_dir = work.join("base");
    sys::mounts::mount_image(sys, base, "squashfs", &base_dir)?;
    let mut lowers = Vec::new();
    for (i, parent) in parents.iter().enumerate().rev() {
        let dir = work.join(format!("parent{i}"));
        crate::archive::cpio::extract_gz(parent, &dir)
            .with_context(|| format!("cannot unpack parent overlay {}", parent.display()))?;
        lowers.push(dir);
    }
    lowers.push(base_dir);
    Ok(lowers)
}

pub fn build(job: &Job) -> anyhow::Result<Vec<Entry>> {
    let plan = job.plan;
    let out = &plan.out;
    let manifest = Manifest::load(out)?;
    let base = lookup::find_base(plan.base.as_deref(), &plan.file, out, &manifest)?;
    let parents: Vec<Input> = plan
        .parents
        .iter()
        .map(|p| lookup::find(out, &manifest, "overlay", p, &file_name(p)))
        .collect::<anyhow::Result<_>>()
        .with_context(|| format!("{}: parents", plan.file.display()))?;
    let inputs = super::inputs::overlay(plan, &base, &parents)?;
    if let Some(entries) = super::job::up_to_date(job, &[file_name(&plan.name)], &inputs)? {
        return Ok(entries);
    }

    let pins = super::job::pins(plan)?;
    let mut work = WorkDir::for_job(job)?;
    job.progress.step(format!(
        "mount {} and {} parent overlay(s)",
        base.path.display(),
        parents.len()
    ));
    let parent_files: Vec<PathBuf> = parents.iter().map(|p| p.path.clone()).collect();
    let lowers = mount_lowers(job.sys, &work.path, &base.path, &parent_files)?;
    let (_, packages) = super::inputs::packages(plan)?;
    let store = if job.options.no_cache {
        None
    } else {
        Some(Store::open(&plan.cache_dir)?)
    };
    let below: Vec<String> = std::iter::once(&base)
        .chain(&parents)
        .map(|i| i.reference().map(|r| r.sha256))
        .collect::<anyhow::Result<_>>()?;
    let below: Vec<&str> = below.iter().map(String::as_str).collect();
    let mut stack = Stack::new(
        job.sys,
        &work.path,
        store,
        lowers.clone(),
        super::job::layers_key(plan, &below),
    )
    .write_behind(work.behind());
    super::job::run_roles(job, &mut stack, &packages, pins.as_ref())?;
    let upper = work.path.join("upper");
    flatten::flatten(stack.task_layers(), &lowers, &upper)?;

    job.progress.step("clean the overlay");
    let removed = cleanup::clean(job.sys, &upper, &plan.cleanup)?;
    let pruned = cleanup::prune_copied_up(&upper, &lowers)?;
    job.progress.done(format!(
        "removed {removed} build-only and per-machine files, {pruned} dirs left only by copy-up"
    ));
    let added = added_packages(&upper, base.entry.as_ref());
    if let Some(pins) = &pins {
        pins.check_installed(&format!("overlay `{}`", plan.name), &added)?;
    }
    let name = file_name(&plan.name);
    let (size, sha256) = pack(job, &upper, lowers, &name)?;
    let mut entry = Entry {
        kind: "overlay".into(),
        name: plan.name.clone(),
        file: name,
        size,
        sha256,
        packages: added,
        base: Some(base.reference()?),
        parents: parents
            .iter()
            .map(Input::reference)
            .collect::<anyhow::Result<_>>()?,
        build_time: artifact::now(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    };
    super::job::stamp(std::slice::from_mut(&mut entry), &inputs);
    artifact::record(out, std::slice::from_ref(&entry))?;
    work.succeeded();
    Ok(vec![entry])
}

/// The upper dir packed as `name` (a gzipped newc cpio; what the lowers
/// hold too is left out) and published.
fn pack(
    job: &Job,
    upper: &Path,
    lowers: Vec<PathBuf>,
    name: &str,
) -> anyhow::Result<(u64, String)> {
    let out = &job.plan.out;
    job.progress.step(format!("pack {name}"));
    let opts = TreeOptions {
        source_date_epoch: job.plan.source_date_epoch,
        exclude: Vec::new(),
        overlay_lowers: Some(lowers),
    };
    let entries = tree_entries(upper, &opts)?;
    let count = entries.len();
    let staged = artifact::staging_file(out, name)?;
    let file = staged.as_file().try_clone()?;
    crate::archive::cpio::write_newc_gz(
        entries,
        std::io::BufWriter::new(file),
        job.plan.gzip_level,
    )
    .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
    .with_context(|| format!("cannot write {name}"))?;
    let (size, sha256) = artifact::publish(out, name, staged.path())?;
    let _ = staged.keep();
    job.progress.done(format!(
        "{name}: {count} entries, {:.1} MB",
        size as f64 / 1e6
    ));
    Ok((size, sha256))
}

/// Packages the overlay installed or upgraded (from the dpkg status file the
/// upper dir holds whole when a role changed it), compared with the basefs's.
fn added_packages(upper: &Path, base: Option<&Entry>) -> BTreeMap<String, String> {
    if !upper.join("var/lib/dpkg/status").exists() {
        return BTreeMap::new();
    }
    let now = facts::packages(upper);
    match base {
        Some(b) => now
            .into_iter()
            .filter(|(k, v)| b.packages.get(k) != Some(v))
            .collect(),
        None => now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::record::Recorder;
    use std::fs;

    #[test]
    fn mount_plan_stacks_parents_over_the_base() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("w");
        // Two tiny parent overlays, as mkimage writes them.
        let parents: Vec<PathBuf> = ["p0", "p1"]
            .iter()
            .map(|name| {
                let path = dir.path().join(format!("{name}.cpio.gz"));
                let mut entry = crate::archive::cpio::Entry::new(
                    format!("etc/{name}"),
                    crate::archive::cpio::EntryKind::Data(b"x".to_vec()),
                    0o644,
                );
                (entry.uid, entry.gid) = (
                    nix::unistd::getuid().as_raw(),
                    nix::unistd::getgid().as_raw(),
                );
                let entries = vec![entry];
                let file = fs::File::create(&path).unwrap();
                crate::archive::cpio::write_newc_gz(entries, file, 6).unwrap();
                path
            })
            .collect();
        let sys = Recorder::default();
        let lowers = mount_lowers(&sys, &work, Path::new("/b/base.squashfs"), &parents).unwrap();
        assert_eq!(
            lowers,
            [
                work.join("parent1"),
                work.join("parent0"),
                work.join("base")
            ]
        );
        assert!(work.join("parent0/etc/p0").is_file() && work.join("parent1/etc/p1").is_file());
        // A task's layer goes over them, the lower dirs named by short links.
        let stack = Stack::new(&sys, &work, None, lowers, "k".into());
        stack
            .mount_top(&work.join("task1"), &work.join("run"))
            .unwrap();
        let plan = sys.plan(&work);
        assert_eq!(plan, [
            "image squashfs /b/base.squashfs /base".to_string(),
            format!(
                "mount overlay /run lowerdir={w}/l/3:{w}/l/2:{w}/l/1,upperdir={w}/task1/upper,workdir={w}/task1/work,redirect_dir=off,metacopy=off,index=off,xino=off",
                w = work.display()
            ),
        ]);
        assert_eq!(
            fs::read_link(work.join("l/3")).unwrap(),
            work.join("parent1")
        );
    }
}
