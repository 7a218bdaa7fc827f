//! The basefs's module cache warmed while the tree is bootstrapped. The
//! selection after the roles (`kernel_trim`) spends most of its time in
//! xz, and each module's `.ko.xz` is kept in the build cache by its bytes
//! (`modules_xz`). The bootstrap keeps about one of the machine's cores
//! busy, so on another thread, at a lower priority, this takes the kernel
//! package the basefs's roles will install (their `kernel_package`, a
//! metapackage followed to its `linux-image-VERSION`) through the private
//! apt, unpacks it into the build dir, runs the same selection on it and
//! compresses what it keeps into that cache. The selection after the roles
//! then finds every module there. Nothing of it reaches the image but
//! through the cache, whose entries are named by their input's hash: the
//! basefs has the same bytes whether this ran, failed, or guessed another
//! kernel (then the selection misses the cache, as without it). A failure
//! is one debug line, never the build's.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;

use crate::apt::{AptSource, Fetcher};
use crate::config::{Kind, ModuleSelection, Plan};

/// How much lower the warm-up runs than the build where SCHED_IDLE is
/// refused (nice(1)'s default).
const NICE: i32 = 10;

/// The cores a machine needs for the warm-up to pay. On 2 cores it costs
/// the bootstrap and the roles more than it saves the selection, at the
/// lowest priority and unpacking in RAM all the same: in back-to-back cold
/// plays (2026-12-07) bootstrap 11.0 → 13.2 s and role base 9.8 → 12.7 s,
/// for a selection 5.4 → 3.2 s (the warm-up had not finished): 30.4 s →
/// 33.6 s in all (42.0 → 42.2 s in a second pair). dpkg and apt keep about
/// one core busy, so a machine with 4 has two left for it.
const MIN_CORES: usize = 4;

/// `1` warms whatever the cores, `0` never (benchmarks and tests).
pub const ENV: &str = "MKIMAGE_WARM_UP";

/// What a warm-up did.
#[derive(Debug)]
pub enum Warmed {
    /// The modules the selection keeps of package `from` (NAME VERSION).
    Compressed {
        from: String,
        compressed: super::modules_xz::Compressed,
    },
    /// A warm-up of the same package and selection finished before.
    Already { from: String },
    /// The package ships its modules compressed (trixie's): nothing to do.
    Shipped { from: String },
    /// It failed (or was stopped): why.
    Failed(String),
}

/// A warm-up of the module cache for one basefs build.
pub struct WarmUp {
    apt: AptSource,
    package: String,
    selection: ModuleSelection,
    /// The build cache (`modules_xz::CACHE_DIR` is under it).
    cache: PathBuf,
    /// Where the package is unpacked (the build dir).
    scratch: PathBuf,
    stop: AtomicBool,
}

impl WarmUp {
    /// The warm-up of `plan`'s build (scratch space in `work`): only a
    /// basefs that compresses its modules, pins no versions (a lock's
    /// pins are the private apt's too) and whose roles name a kernel.
    pub fn new(plan: &Plan, work: &Path) -> Option<WarmUp> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        match std::env::var(ENV).as_deref() {
            Ok("1") => {}
            Ok("0") => return None,
            _ if cores < MIN_CORES => {
                tracing::debug!(
                    "no module cache warm-up on {cores} cores (it takes {MIN_CORES}, or {ENV}=1)"
                );
                return None;
            }
            _ => {}
        }
        Self::on_any_machine(plan, work)
    }

    /// `new` whatever the machine's cores (for the tests).
    pub fn on_any_machine(plan: &Plan, work: &Path) -> Option<WarmUp> {
        if plan.kind != Kind::Basefs || !plan.kernel_modules.compress || plan.lock.is_some() {
            return None;
        }
        let package = kernel_package(plan)?;
        Some(WarmUp {
            // The initrd build's private apt: one set of lists for both.
            apt: crate::initramfs::with_firmware_component(&super::inputs::apt_source(plan)),
            package,
            selection: plan.kernel_modules.clone(),
            cache: plan.cache_dir.clone(),
            scratch: work.to_path_buf(),
            stop: AtomicBool::new(false),
        })
    }

    /// Warm the cache (on the calling thread, at a lower priority). What
    /// happened is logged and returned; a failure is the build's concern
    /// no more than that.
    pub fn run(&self) -> Warmed {
        // SCHED_IDLE: this thread, and the threads and programs it starts,
        // run only on a core nothing else of the build wants; nice 10
        // where that policy is refused. (Linux: 0 is the calling thread.)
        let idle = libc::sched_param { sched_priority: 0 };
        // SAFETY: `idle` outlives the call; none of the three calls has
        // other memory-safety preconditions (ioprio_set takes integers).
        unsafe {
            if libc::sched_setscheduler(0, libc::SCHED_IDLE, &idle) != 0 {
                libc::setpriority(libc::PRIO_PROCESS, 0, NICE);
            }
            // And its disk I/O only when the disk is idle (ioprio_set:
            // IOPRIO_WHO_PROCESS 1, this thread 0, IOPRIO_CLASS_IDLE 3).
            libc::syscall(libc::SYS_ioprio_set, 1, 0, 3 << 13);
        }
        let started = std::time::Instant::now();
        let warmed = match self.warm() {
            Ok(warmed) => warmed,
            Err(e) => Warmed::Failed(format!("{e:#}")),
        };
        let secs = started.elapsed().as_secs_f64();
        match &warmed {
            Warmed::Compressed {
                from,
                compressed: c,
            } => tracing::debug!(
                package = %self.package,
                "warmed the module cache from {from} in {secs:.1}s: {} modules, {} were there",
                c.modules,
                c.cached
            ),
            Warmed::Already { from } => {
                tracing::debug!(package = %self.package, "the module cache was warm already for {from}")
            }
            Warmed::Shipped { from } => tracing::debug!(
                package = %self.package,
                "no module cache warm-up: {from} ships its modules compressed"
            ),
            Warmed::Failed(e) => tracing::debug!(
                package = %self.package,
                "no module cache warm-up (the selection compresses the modules itself): {e}"
            ),
        }
        warmed
    }

    /// Stop at the next module (or step): the selection it was ahead of
    /// has started.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn stopped(&self) -> anyhow::Result<()> {
        match self.stop.load(Ordering::Relaxed) {
            true => Err(anyhow::anyhow!("stopped: the selection has started")),
            false => Ok(()),
        }
    }

    fn warm(&self) -> anyhow::Result<Warmed> {
        let fetcher = Fetcher::new(&self.apt)?;
        let pkg = fetcher.resolve(&self.package)?;
        let from = format!("{} {}", pkg.name, pkg.version);
        let xz_cache = self.cache.join(super::modules_xz::CACHE_DIR);
        let marker = xz_cache.join(format!(
            "warmed.{}",
            &crate::artifact::sha256_bytes(
                format!(
                    "mkimage {} {} {} {:?}",
                    env!("CARGO_PKG_VERSION"),
                    pkg.name,
                    pkg.version,
                    self.selection
                )
                .as_bytes()
            )[..16]
        ));
        if marker.is_file() {
            return Ok(Warmed::Already { from });
        }
        self.stopped()?;
        let deb = fetcher.fetch(&pkg)?;
        if !has_plain_modules(&deb)? {
            return Ok(Warmed::Shipped { from });
        }
        self.stopped()?;
        let tree = tempfile::Builder::new()
            .prefix("modules-warm.")
            .tempdir_in(&self.scratch)
            .with_context(|| format!("cannot create a directory in {}", self.scratch.display()))?;
        // In RAM where there is room: the package's ~400 MB of modules
        // written to the disk would hold the bootstrap up in writeback.
        let _in_ram = RamDir::mount(tree.path());
        crate::apt::extract(&deb, tree.path())?;
        // As in the tree the package is installed into (merged /usr), so
        // depmod finds the modules wherever the package put them.
        if !tree.path().join("lib").exists() {
            std::fs::create_dir_all(tree.path().join("usr/lib"))?;
            std::os::unix::fs::symlink("usr/lib", tree.path().join("lib"))?;
        }
        self.stopped()?;
        let compressed = super::kernel_trim::compress_ahead(
            tree.path(),
            &self.selection,
            &self.cache,
            &self.stop,
        )?;
        std::fs::write(&marker, b"")
            .with_context(|| format!("cannot write {}", marker.display()))?;
        Ok(Warmed::Compressed { from, compressed })
    }
}

/// A tmpfs over a scratch dir, unmounted when dropped; none (the disk)
/// when the machine has under `RAM_DIR_NEEDS` available.
struct RamDir(Option<PathBuf>);

/// What a RAM scratch dir needs available: the unpacked kernel package
/// (about 410 MB for Debian's amd64 kernel) with room to spare.
const RAM_DIR_NEEDS: u64 = 2 << 30;

impl RamDir {
    fn mount(dir: &Path) -> RamDir {
        if crate::sys::mem_available() < RAM_DIR_NEEDS {
            return RamDir(None);
        }
        let mounted = nix::mount::mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            Some("mode=0700,size=1g"),
        );
        RamDir(mounted.ok().map(|()| dir.to_path_buf()))
    }
}

impl Drop for RamDir {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Whether package `deb` ships a module uncompressed (`*.ko`), from its
/// `md5sums` (every file it installs), without unpacking it.
fn has_plain_modules(deb: &Path) -> anyhow::Result<bool> {
    let listed = crate::exec::Cmd::new("dpkg-deb")
        .arg("--info")
        .arg(deb)
        .arg("md5sums")
        .run()
        .with_context(|| format!("cannot read the file list of {}", deb.display()))?;
    Ok(listed.stdout.lines().any(|l| l.trim_end().ends_with(".ko")))
}

/// The kernel package `plan`'s roles install: `kernel_package` as their
/// tasks see it (the build's variable, else a role's default), when it
/// is a plain name.
fn kernel_package(plan: &Plan) -> Option<String> {
    const VAR: &str = "kernel_package";
    let plain = |v: String| (!v.contains("{{") && !v.trim().is_empty()).then_some(v);
    plan.provisioners.iter().find_map(|name| {
        let role = crate::provision::load_role(&plan.provisioners_dir, name).ok()?;
        role.var(VAR, &plan.context).and_then(plain)
    })
}
