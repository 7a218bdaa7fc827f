//! Overlays: roles run on top of the mounted basefs (and parent overlays);
//! what they changed — the overlayfs upper dir — is cleaned by the same
//! never-ship table as the basefs and packed as a gzipped newc cpio, with
//! whiteouts kept and opaque dirs expanded so the initrd can unpack it onto
//! a tmpfs upper without xattrs.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::mount::MsFlags;

use super::{basefs::run_roles, cleanup, facts, workdir::WorkDir, Job};
use crate::archive::tree::{tree_entries, TreeOptions};
use crate::artifact::lookup::{self, Input};
use crate::artifact::{self, Entry, Manifest};
use crate::sys::{self, Sys};

/// The artifact file of an overlay build.
pub fn file_name(name: &str) -> String {
    format!("{name}.cpio.gz")
}

/// The layers of an overlay build, mounted.
#[derive(Debug)]
pub struct Layers {
    /// Read-only layers, top-most first: the last parent, …, the first, the base.
    pub lowers: Vec<PathBuf>,
    /// What the roles change lands here.
    pub upper: PathBuf,
    /// The union the roles run in.
    pub merged: PathBuf,
}

/// Loop-mount the basefs, unpack the parents, and mount the union in `work`.
pub fn mount_layers(sys: &dyn Sys, work: &Path, base: &Path, parents: &[PathBuf]) -> anyhow::Result<Layers> {
    let base_dir = work.join("base");
    sys::mounts::mount_image(sys, base, "squashfs", &base_dir)?;
    let mut lowers = Vec::new();
    for (i, parent) in parents.iter().enumerate().rev() {
        let dir = work.join(format!("parent{i}"));
        crate::archive::cpio::extract_gz(parent, &dir).with_context(|| format!("cannot unpack parent overlay {}", parent.display()))?;
        lowers.push(dir);
    }
    lowers.push(base_dir);
    let (upper, merged, scratch) = (work.join("upper"), work.join("merged"), work.join("work"));
    for d in [&upper, &merged, &scratch] {
        fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let lowerdir = lowers.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":");
    // No redirects or metacopy: the upper dir must hold whole files and
    // plain whiteouts, which is what the cpio can carry.
    let options = format!(
        "lowerdir={lowerdir},upperdir={},workdir={},redirect_dir=off,metacopy=off,index=off,xino=off",
        upper.display(),
        scratch.display()
    );
    sys::mount_fs(sys, "overlay", "overlay", &merged, MsFlags::empty(), Some(&options))?;
    Ok(Layers { lowers, upper, merged })
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

    let mut work = WorkDir::create(job.sys, out, &plan.name, job.keep_build_dir)?;
    job.progress.step(format!("mount {} and {} parent overlay(s)", base.path.display(), parents.len()));
    let parent_files: Vec<PathBuf> = parents.iter().map(|p| p.path.clone()).collect();
    let layers = mount_layers(job.sys, &work.path, &base.path, &parent_files)?;
    run_roles(job, &layers.merged)?;
    sys::unmount_all(job.sys, &layers.merged)?;

    job.progress.step("clean the overlay");
    let removed = cleanup::clean(job.sys, &layers.upper, &plan.cleanup)?;
    job.progress.done(format!("removed {removed} build-only and per-machine files"));
    let added = added_packages(&layers.upper, base.entry.as_ref());
    let name = file_name(&plan.name);
    job.progress.step(format!("pack {name}"));
    let opts = TreeOptions { source_date_epoch: plan.source_date_epoch, exclude: Vec::new(), overlay_lowers: Some(layers.lowers.clone()) };
    let entries = tree_entries(&layers.upper, &opts)?;
    let count = entries.len();
    let staged = artifact::staging_file(out, &name)?;
    let file = staged.as_file().try_clone()?;
    crate::archive::cpio::write_newc_gz(entries, std::io::BufWriter::new(file), plan.gzip_level)
        .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
        .with_context(|| format!("cannot write {name}"))?;
    let (size, sha256) = artifact::publish(out, &name, staged.path())?;
    let _ = staged.keep();
    job.progress.done(format!("{name}: {count} entries, {:.1} MB", size as f64 / 1e6));
    let entry = Entry {
        kind: "overlay".into(),
        name: plan.name.clone(),
        file: name,
        size,
        sha256,
        inputs_hash: artifact::inputs::hash(&plan.context, &plan.provisioners_dir, &plan.provisioners),
        packages: added,
        base: Some(base.reference()?),
        parents: parents.iter().map(Input::reference).collect::<anyhow::Result<_>>()?,
        build_time: artifact::now(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    };
    artifact::record(out, std::slice::from_ref(&entry))?;
    work.succeeded();
    Ok(vec![entry])
}

/// Packages the overlay installed or upgraded (from the dpkg status file the
/// upper dir holds whole when a role changed it), compared with the basefs's.
fn added_packages(upper: &Path, base: Option<&Entry>) -> BTreeMap<String, String> {
    if !upper.join("var/lib/dpkg/status").exists() {
        return BTreeMap::new();
    }
    let now = facts::packages(upper);
    match base {
        Some(b) => now.into_iter().filter(|(k, v)| b.packages.get(k) != Some(v)).collect(),
        None => now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::record::Recorder;

    #[test]
    fn mount_plan_stacks_parents_over_the_base() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("w");
        // Two tiny parent overlays, as mkimage writes them.
        let parents: Vec<PathBuf> = ["p0", "p1"]
            .iter()
            .map(|name| {
                let path = dir.path().join(format!("{name}.cpio.gz"));
                let mut entry = crate::archive::cpio::Entry::new(format!("etc/{name}"), crate::archive::cpio::EntryKind::Data(b"x".to_vec()), 0o644);
                (entry.uid, entry.gid) = (nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw());
                let entries = vec![entry];
                let file = fs::File::create(&path).unwrap();
                crate::archive::cpio::write_newc_gz(entries, file, 6).unwrap();
                path
            })
            .collect();
        let sys = Recorder::default();
        let layers = mount_layers(&sys, &work, Path::new("/b/base.squashfs"), &parents).unwrap();
        assert_eq!(layers.lowers, [work.join("parent1"), work.join("parent0"), work.join("base")]);
        assert!(work.join("parent0/etc/p0").is_file() && work.join("parent1/etc/p1").is_file());
        let plan = sys.plan(&work);
        assert_eq!(plan, [
            "image squashfs /b/base.squashfs /base".to_string(),
            format!(
                "mount overlay /merged lowerdir={w}/parent1:{w}/parent0:{w}/base,upperdir={w}/upper,workdir={w}/work,redirect_dir=off,metacopy=off,index=off,xino=off",
                w = work.display()
            ),
        ]);
    }
}
