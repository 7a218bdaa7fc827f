//! Exclusive locks on shared caches (the `.deb` cache, the private apt):
//! builds running at the same time share them, and apt and the
//! bootstrappers must not download into one at once.

use std::fs::File;
use std::path::Path;

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};

/// Block until this process holds `dir/NAME` exclusively (the file is created).
pub fn exclusive(dir: &Path, name: &str) -> anyhow::Result<Flock<File>> {
    let path = dir.join(name);
    let file = File::create(&path).with_context(|| format!("cannot create the lock {}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| e).with_context(|| format!("cannot lock {}", path.display()))
}

/// The `.deb` cache's lock, if the cache exists yet.
pub fn package_cache(dir: &Path) -> anyhow::Result<Option<Flock<File>>> {
    if !dir.is_dir() {
        return Ok(None);
    }
    exclusive(dir, ".mkimage-lock").map(Some)
}
