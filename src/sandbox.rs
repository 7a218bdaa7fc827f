//! The build sandbox: a private mount and PID namespace for the whole build,
//! the chroot's API mounts, and cleanup that never removes through a live
//! mount.
//!
//! `enter()` runs once, at the start of a build command: the process forks
//! into new mount and PID namespaces. The parent only waits; the child (PID 1
//! of the new namespace) does the build and dies with its parent
//! (PR_SET_PDEATHSIG). When it ends — normally, on error, or killed with
//! SIGKILL — the kernel kills everything in the PID namespace and the mount
//! namespace goes with it, so no mount outlives the build.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

/// Move this process into private mount + PID namespaces. Returns in the
/// child; the parent exits with the child's status. Call before any thread
/// is started.
pub fn enter() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(crate::UsageError(
            "building images needs root (mounts, chroot, namespaces): run mkimage as root".into(),
        )
        .into());
    }
    if std::env::var_os("MKIMAGE_IN_SANDBOX").is_some() {
        return Ok(());
    }
    // The parent holds the write end of this pipe until it dies; the child
    // checks it after setting PDEATHSIG (getppid() is 0 across PID namespaces).
    let (alive_r, alive_w) = nix::unistd::pipe().context("pipe")?;
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID).context("cannot create private namespaces")?;
    // SAFETY: called while single-threaded (before any thread is spawned).
    match unsafe { fork() }.context("fork")? {
        ForkResult::Parent { child } => {
            drop(alive_r);
            let _keep = alive_w;
            ignore_interrupts();
            std::process::exit(wait_for(child));
        }
        ForkResult::Child => {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).context("prctl")?;
            drop(alive_w);
            if parent_gone(&alive_r) {
                std::process::exit(1);
            }
            drop(alive_r);
            std::env::set_var("MKIMAGE_IN_SANDBOX", "1");
            // As PID 1 we get no default signal actions: install real ones.
            install_interrupt_exit();
            mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_SLAVE, None::<&str>)
                .context("cannot make / a slave mount")?;
            Ok(())
        }
    }
}

fn parent_gone(fd: &std::os::fd::OwnedFd) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

/// The parent leaves Ctrl-C to the child (which gets it too, as part of the
/// foreground process group) and keeps waiting for it.
fn ignore_interrupts() {
    use nix::sys::signal::{signal, SigHandler};
    // SAFETY: SIG_IGN is async-signal-safe.
    unsafe {
        let _ = signal(Signal::SIGINT, SigHandler::SigIgn);
    }
}

extern "C" fn exit_on_signal(sig: libc::c_int) {
    // SAFETY: _exit is async-signal-safe. Exiting PID 1 tears the namespaces
    // (and every mount of the build) down.
    unsafe { libc::_exit(128 + sig) }
}

fn install_interrupt_exit() {
    use nix::sys::signal::{signal, SigHandler};
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only calls _exit.
        unsafe {
            let _ = signal(sig, SigHandler::Handler(exit_on_signal));
        }
    }
}

fn wait_for(child: Pid) -> i32 {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return 1,
        }
    }
}

/// Mount points (absolute) at or under `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

/// Unmount everything at or under `dir`, deepest first (lazily if busy).
pub fn unmount_all(dir: &Path) -> anyhow::Result<()> {
    for _ in 0..3 {
        let mounts = mounts_under(dir);
        if mounts.is_empty() {
            return Ok(());
        }
        for m in mounts {
            if umount2(&m, MntFlags::empty()).is_err() {
                let _ = umount2(&m, MntFlags::MNT_DETACH);
            }
        }
    }
    let left = mounts_under(dir);
    if left.is_empty() {
        Ok(())
    } else {
        bail!("cannot unmount {}", left.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))
    }
}

/// Remove a directory tree, refusing while anything is mounted under it.
pub fn remove_tree(dir: &Path) -> anyhow::Result<()> {
    let mounts = mounts_under(dir);
    if !mounts.is_empty() {
        bail!(
            "refusing to remove {}: still mounted under it: {}",
            dir.display(),
            mounts.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", dir.display())),
    }
}

/// Bind-mount `src` on `dest` (creating `dest`).
pub fn bind(src: &Path, dest: &Path, readonly: bool) -> anyhow::Result<()> {
    if src.is_dir() {
        fs::create_dir_all(dest)?;
    } else if !dest.exists() {
        fs::write(dest, b"")?;
    }
    mount(Some(src), dest, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .with_context(|| format!("cannot bind-mount {} on {}", src.display(), dest.display()))?;
    if readonly {
        mount(None::<&str>, dest, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY, None::<&str>)
            .with_context(|| format!("cannot make {} read-only", dest.display()))?;
    }
    Ok(())
}

/// Mount a filesystem of `fstype` on `dest` (creating it).
pub fn mount_fs(fstype: &str, source: &str, dest: &Path, flags: MsFlags, data: Option<&str>) -> anyhow::Result<()> {
    fs::create_dir_all(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    mount(Some(source), dest, Some(fstype), flags, data)
        .with_context(|| format!("cannot mount {fstype} on {}", dest.display()))
}

/// Mount a squashfs image read-only on `dest` through a loop device
/// (`mount -o loop` sets up and auto-clears the loop device).
pub fn mount_squashfs(image: &Path, dest: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dest)?;
    crate::exec::Cmd::new("mount")
        .args(["-t", "squashfs", "-o", "loop,ro"])
        .arg(image)
        .arg(dest)
        .run()
        .with_context(|| format!("cannot loop-mount {} (is it a squashfs image?)", image.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
    }

    #[test]
    fn proc_is_mounted_somewhere() {
        assert!(!mounts_under(Path::new("/proc")).is_empty());
        assert!(mounts_under(Path::new("/nonexistent-mkimage")).is_empty());
    }
}
