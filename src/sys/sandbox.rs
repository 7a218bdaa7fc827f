//! The build sandbox: a private mount and PID namespace for the whole build.
//!
//! `enter()` runs once, at the start of a build command: the process forks
//! into new mount and PID namespaces. The parent only waits; the child (PID 1
//! of the new namespace) does the build and dies with its parent
//! (PR_SET_PDEATHSIG). When it ends — normally, on error, or killed with
//! SIGKILL — the kernel kills everything in the PID namespace and the mount
//! namespace goes with it, so no mount outlives the build.

use std::path::Path;

use anyhow::Context;
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
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
    let sys = &super::calls::REAL;
    super::calls::Sys::unshare(sys, CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID)?;
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
            super::calls::Sys::mount(
                sys,
                Path::new("none"),
                Path::new("/"),
                None,
                MsFlags::MS_REC | MsFlags::MS_SLAVE,
                None,
            )
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
