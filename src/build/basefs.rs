//! The basefs: bootstrap → roles → cleanup → squashfs, published atomically
//! with `NAME.sha256` and a manifest entry.

use anyhow::Context;

use super::{cleanup, tree, workdir::WorkDir, Job};
use crate::artifact::{self, Entry};
use crate::provision::{self, Chroot, ChrootOptions};

/// The artifact file of a basefs build.
pub fn file_name(name: &str) -> String {
    format!("{name}.squashfs")
}

pub fn build(job: &Job) -> anyhow::Result<Vec<Entry>> {
    let cfg = job.cfg;
    let mut work = WorkDir::create(job.out, &cfg.name, job.keep_build_dir)?;
    let root = work.path.join("root");
    std::fs::create_dir_all(&root)?;

    let cache = job.package_cache();
    crate::bootstrap::prepare(&crate::bootstrap::Bootstrap { cfg, cache: &cache }, &job.cache_root(), &root, job.progress)?;
    run_roles(job, &root)?;

    job.progress.step("clean the tree");
    let removed = cleanup::clean(&root, &cfg.cleanup)?;
    job.progress.done(format!("removed {removed} build-only and per-machine files"));

    let packages = tree::packages(&root);
    let kernel_version = tree::kernel_versions(&root).pop();
    let entry = pack(job, &root, Entry {
        kind: "basefs".into(),
        name: cfg.name.clone(),
        file: file_name(&cfg.name),
        inputs_hash: tree::inputs_hash(cfg),
        packages,
        kernel_version,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    })?;
    work.succeeded();
    Ok(vec![entry])
}

/// Run the config's roles in a chroot prepared on `root`.
pub fn run_roles(job: &Job, root: &std::path::Path) -> anyhow::Result<()> {
    let cfg = job.cfg;
    if cfg.provisioners.is_empty() {
        return Ok(());
    }
    let opts = ChrootOptions { apt_proxy: cfg.apt_proxy.clone(), package_cache: Some(job.package_cache()) };
    let chroot = Chroot::enter(root, &opts)?;
    let ctx = provision::Context {
        root,
        vars: &cfg.context,
        progress: job.progress,
        source_date_epoch: cfg.source_date_epoch,
        templater: Default::default(),
    };
    for name in &cfg.provisioners {
        let role = provision::load_role(&cfg.provisioners_dir, name)?;
        role.run(&ctx)?;
    }
    chroot.leave()
}

/// Pack `root` as squashfs into the output dir and record it.
fn pack(job: &Job, root: &std::path::Path, mut entry: Entry) -> anyhow::Result<Entry> {
    let cfg = job.cfg;
    let mut opts: crate::archive::squashfs::SquashfsOptions = match &cfg.squashfs {
        Some(v) => serde_yaml_ng::from_value(v.clone())
            .map_err(|e| crate::config::ConfigError(format!("{}: squashfs: {e}", cfg.file.display())))?,
        None => Default::default(),
    };
    opts.source_date_epoch = cfg.source_date_epoch;
    job.progress.step(format!("pack {}", entry.file));
    let started = std::time::Instant::now();
    let staged = artifact::staging_file(job.out, &entry.file)?;
    crate::archive::squashfs::write_tree(root, &mut staged.as_file().try_clone()?, &opts)
        .with_context(|| format!("cannot write {}", entry.file))?;
    let verity = crate::archive::verity::append_tree(&mut staged.as_file().try_clone()?)
        .with_context(|| format!("cannot append the dm-verity hash tree to {}", entry.file))?;
    let (size, sha256) = artifact::publish(job.out, &entry.file, staged.path())?;
    let _ = staged.keep();
    job.progress.done(format!("{} ({:.1} MB) in {:.1}s", entry.file, size as f64 / 1e6, started.elapsed().as_secs_f64()));
    entry.size = size;
    entry.sha256 = sha256;
    entry.verity = Some(verity);
    entry.build_time = artifact::now();
    artifact::record(job.out, std::slice::from_ref(&entry))?;
    Ok(entry)
}
