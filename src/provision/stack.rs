//! Roles run in stacked layers. Each task runs in a chroot on an overlayfs
//! whose lower dirs are the tree it starts from (a bootstrapped tree, or a
//! basefs and parent overlays) and the layers of the tasks before it; what
//! it changes (the upper dir) becomes its layer, stored under its key (see
//! `key`), so the next build with the same tasks mounts the stored layers
//! and runs only from the first task that changed. A `cache: false` task
//! runs every time; the tasks above it are keyed by what it changed.
//!
//! Without a store (`--no-cache`) every task runs, all in one layer: the
//! build as it is without any cache.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::mount::MsFlags;

use super::chroot::{Chroot, ChrootOptions};
use super::layers::{self, Layer, Store};
use super::role::Role;
use crate::progress::Progress;
use crate::sys::write_behind::WriteBehind;
use crate::sys::{self, Sys};
use crate::template::Templater;

/// The largest mount option string the kernel takes (one page).
const MAX_OPTIONS: usize = 4000;

/// What a role's tasks run with.
pub struct Env<'a> {
    pub vars: &'a minijinja::Value,
    pub progress: &'a Progress,
    /// The package index (or lock file) digest, for apt tasks' keys.
    pub packages: &'a str,
    pub source_date_epoch: u64,
    pub chroot: ChrootOptions,
}

/// A stack of layers being built in `work`.
pub struct Stack<'a> {
    sys: &'a dyn Sys,
    work: PathBuf,
    store: Option<Store>,
    /// Every lower dir, top-most first.
    lowers: Vec<PathBuf>,
    /// How many of `lowers` the tasks added.
    added: usize,
    /// The key of the top of the stack.
    key: String,
    held: Vec<Layer>,
    count: usize,
    /// Set when `work` is in RAM: layers go on from there, and are copied
    /// into the store behind the build.
    behind: Option<&'a WriteBehind>,
}

impl<'a> Stack<'a> {
    /// A stack over `lowers` (top-most first), whose content `root_key`
    /// names; `store: None` runs every task afresh in one layer.
    pub fn new(
        sys: &'a dyn Sys,
        work: &Path,
        store: Option<Store>,
        lowers: Vec<PathBuf>,
        root_key: String,
    ) -> Stack<'a> {
        Stack {
            sys,
            work: work.to_path_buf(),
            store,
            lowers,
            added: 0,
            key: root_key,
            held: Vec::new(),
            count: 0,
            behind: None,
        }
    }

    /// Store layers by copying them behind the build (`work` is in RAM,
    /// not on the store's filesystem).
    pub fn write_behind(mut self, behind: Option<&'a WriteBehind>) -> Stack<'a> {
        self.behind = behind;
        self
    }

    /// Every lower dir, top-most first (the tasks' layers, then the tree
    /// the stack started from).
    pub fn lowers(&self) -> &[PathBuf] {
        &self.lowers
    }

    /// The layers the tasks added, top-most first.
    pub fn task_layers(&self) -> &[PathBuf] {
        &self.lowers[..self.added]
    }

    /// Run every task of `roles`, in order.
    pub fn run(&mut self, roles: &[Role], env: &Env) -> anyhow::Result<()> {
        let t = Templater::default();
        if self.store.is_none() {
            return self.run_uncached(roles, env, &t);
        }
        for role in roles {
            for index in 0..role.len() {
                let task = role.prepare(index, env.vars, &t)?;
                if task.is_empty() {
                    continue;
                }
                let key = if task.cache {
                    Some(task.key(&self.key, env.packages, &t)?)
                } else {
                    None
                };
                let cached = match (&key, &self.store) {
                    (Some(k), Some(store)) => store.get(k)?,
                    _ => None,
                };
                if let Some(layer) = cached {
                    env.progress
                        .step(format!("{} | {}: cached", role.name, task.label));
                    self.push_stored(layer);
                    continue;
                }
                let sys = self.sys;
                let upper = self.run_in_layer(env, |root| {
                    Ok(task.run(root, sys, env.progress, &t, false)?)
                })?;
                match (key, &self.store) {
                    (Some(k), Some(store)) => {
                        let info = format!("role {}, task {}\n", role.name, task.label);
                        self.keep(store.clone(), k, upper, info)?;
                    }
                    _ => {
                        let content = layers::content_hash(&upper, env.source_date_epoch)?;
                        self.key = crate::artifact::sha256_bytes(
                            format!("{}\nuncached {content}", self.key).as_bytes(),
                        );
                        self.push(upper);
                    }
                }
            }
        }
        Ok(())
    }

    /// Every task in one layer, nothing read from or written to a store.
    fn run_uncached(&mut self, roles: &[Role], env: &Env, t: &Templater) -> anyhow::Result<()> {
        if roles.iter().all(Role::is_empty) {
            return Ok(());
        }
        let sys = self.sys;
        let upper = self.run_in_layer(env, |root| {
            for role in roles {
                for index in 0..role.len() {
                    role.prepare(index, env.vars, t)?
                        .run(root, sys, env.progress, t, false)?;
                }
            }
            Ok(())
        })?;
        self.push(upper);
        Ok(())
    }

    /// Put a task's fresh layer into the store and on the stack: moved in
    /// and mounted from there, or (in RAM) mounted from where it is and
    /// copied in behind the build.
    fn keep(
        &mut self,
        store: Store,
        key: String,
        upper: PathBuf,
        info: String,
    ) -> anyhow::Result<()> {
        let Some(behind) = self.behind else {
            let layer = store.put(&key, &upper, &info)?;
            self.push_stored(layer);
            return Ok(());
        };
        let (k, from) = (key.clone(), upper.clone());
        behind.submit(format!("layer {}", info.trim_end()), move || {
            store.copy_in(&k, &from, &info)
        });
        self.key = key;
        self.push(upper);
        Ok(())
    }

    fn push_stored(&mut self, layer: Layer) {
        self.key = layer.key.clone();
        if !layers::is_empty(&layer.tree) {
            self.lowers.insert(0, layer.tree.clone());
            self.added += 1;
        }
        self.held.push(layer);
    }

    fn push(&mut self, dir: PathBuf) {
        if !layers::is_empty(&dir) {
            self.lowers.insert(0, dir);
            self.added += 1;
        }
    }

    /// Mount a fresh upper over the stack, enter a chroot there, run `body`
    /// on it, take everything down again; returns the upper dir.
    fn run_in_layer(
        &mut self,
        env: &Env,
        body: impl FnOnce(&Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<PathBuf> {
        self.count += 1;
        let dir = self.work.join(format!("task{}", self.count));
        let merged = self.work.join("run");
        let upper = self.mount_top(&dir, &merged)?;
        let chroot = Chroot::enter(self.sys, &merged, &env.chroot)?;
        let result = body(&merged);
        let left = chroot.leave();
        sys::unmount_all(self.sys, &merged)?;
        result?;
        left?;
        sys::remove_tree(self.sys, &dir.join("work"))?;
        Ok(upper)
    }

    /// Mount the stack with a fresh upper dir `dir/upper` on `merged`;
    /// returns the upper dir.
    pub fn mount_top(&self, dir: &Path, merged: &Path) -> anyhow::Result<PathBuf> {
        let upper = dir.join("upper");
        mount_union(
            self.sys,
            &self.work.join("l"),
            &self.lowers,
            &upper,
            &dir.join("work"),
            merged,
        )?;
        Ok(upper)
    }
}

/// Mount overlayfs on `merged`: `lowers` (top-most first) under a fresh
/// `upper` (and its `work` dir). Lower dirs are named through short links
/// in `links`, so a deep stack fits the kernel's one-page option string.
/// No redirects or metacopy: an upper dir holds whole files and plain
/// whiteouts, which a cpio can carry and a later stack can mount.
pub fn mount_union(
    sys: &dyn Sys,
    links: &Path,
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    merged: &Path,
) -> anyhow::Result<()> {
    fs::create_dir_all(links).with_context(|| format!("cannot create {}", links.display()))?;
    let mut names = Vec::new();
    for (i, lower) in lowers.iter().enumerate() {
        let link = links.join((lowers.len() - i).to_string());
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(lower, &link)
            .with_context(|| format!("cannot create {}", link.display()))?;
        names.push(link.display().to_string());
    }
    for d in [upper, work, merged] {
        fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={},redirect_dir=off,metacopy=off,index=off,xino=off",
        names.join(":"),
        upper.display(),
        work.display()
    );
    if options.len() > MAX_OPTIONS {
        anyhow::bail!("{} layers do not fit one overlay mount: merge some of the roles' tasks (each task is a layer)", lowers.len());
    }
    sys::mount_fs(
        sys,
        "overlay",
        "overlay",
        merged,
        MsFlags::empty(),
        Some(&options),
    )
}
