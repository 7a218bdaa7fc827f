//! `mkimage boot-test --iso FILE`: boot an ISO as a CD-ROM and judge the
//! same assertions on the serial console.
//!
//! - An offline ISO boots with no network at all — the VM's NIC is
//!   connected to nothing, so the discovery still sees the hardware but no
//!   packet leaves (`run`). The checker overlay goes onto a test copy of
//!   the ISO (`iso::remaster`); the DNS assertion needs a network and is
//!   left out.
//! - A network ISO (`mkimage iso --server URL`) boots on the netboot path's
//!   network and server (`boottest::run`); its test copy names that server
//!   and the checker overlay's URL (`prepare_online`), and every netboot
//!   assertion (DNS, the node record) applies.
//!
//! With `--secure-boot` the firmware is OVMF's Secure Boot build with
//! Microsoft's keys: the ISO's shim, Debian's signed GRUB CD image and the
//! signed kernel must pass it.

use std::path::Path;
use std::time::{Duration, Instant};

use super::checks::Expect;
use super::config::BootTestConfig;
use super::request::Request;
use super::{checker, vm};
use crate::secureboot::firmware;

/// The server a network ISO names (`mkimage.api=`), None for an offline
/// one; an error for a file that is not an ISO made by `mkimage iso`.
pub fn server_of(file: &Path) -> anyhow::Result<Option<String>> {
    if !file.is_file() {
        return Err(crate::UsageError(format!(
            "--iso {}: no such file (build one with mkimage iso --offline|--server URL --output FILE)",
            file.display()
        ))
        .into());
    }
    let line = crate::iso::remaster::cmdline_of(file)?;
    Ok(crate::iso::remaster::server_of(&line))
}

/// The VM boots a test copy of the network ISO `file` from the CD-ROM,
/// with the NIC on the test's network (no boot file: nothing netboots) and
/// the ISO's server URL rewritten to the test's `server`.
pub fn prepare_online(
    spec: &mut vm::VmSpec,
    work: &Path,
    file: &Path,
    server: &str,
    checker: (&str, &str),
    args: &str,
    secure_boot: bool,
) -> anyhow::Result<()> {
    let test_iso = work.join("test.iso");
    crate::iso::remaster::against_server(file, server, checker, args, &test_iso)?;
    spec.net = vm::Net::User { bootfile: None };
    spec.tftp = None;
    spec.boot = vm::Boot::Cdrom(test_iso);
    if secure_boot {
        spec.uefi = true;
        spec.secure_boot = Some(firmware::vars(work, None)?);
    }
    tracing::info!(
        "booting the network ISO {} as a CD-ROM{}, its server {server}",
        file.display(),
        if secure_boot {
            " under Secure Boot (shim → signed GRUB → signed kernel)"
        } else {
            ""
        }
    );
    Ok(())
}

pub fn run(
    req: &Request,
    test: &BootTestConfig,
    expect: &[Expect],
    file: &Path,
) -> anyhow::Result<()> {
    let work = tempfile::Builder::new()
        .prefix("mkimage-boot-test.")
        .tempdir_in("/var/tmp")?;
    let test_iso = work.path().join("test.iso");
    // no_timer_check: a loaded host can make TCG fail the kernel's IO-APIC timer check.
    let args = format!("no_timer_check {}", req.append);
    crate::iso::remaster::with_overlay(file, &checker::overlay(expect)?, args.trim(), &test_iso)?;

    let serial = req
        .serial_log
        .clone()
        .unwrap_or_else(|| work.path().join("serial.log"));
    let mut spec = vm::VmSpec::netboot(&serial, "");
    spec.net = vm::Net::Unplugged;
    spec.boot = vm::Boot::Cdrom(test_iso);
    spec.memory_mib = req.memory.or(test.memory).unwrap_or(1536);
    spec.nic = req.nic;
    spec.mac = req.mac.to_lowercase();
    spec.uefi = req.uefi;
    if req.secure_boot {
        spec.uefi = true;
        spec.secure_boot = Some(firmware::vars(work.path(), None)?);
    }
    let timeout = Duration::from_secs(req.timeout.or(test.timeout).unwrap_or(600));
    tracing::info!(
        "booting {} as a CD-ROM ({}, no network, {} MiB); console: {}",
        file.display(),
        match (spec.uefi, &spec.secure_boot) {
            (_, Some(_)) => "UEFI with Secure Boot",
            (true, None) => "UEFI",
            (false, None) => "BIOS",
        },
        spec.memory_mib,
        serial.display()
    );
    let started = Instant::now();
    let mut guest = vm::Vm::start(&spec)?;
    let stop = guest.watch(timeout, |log| {
        log.contains("mkimage-check: done")
            || log.contains("mkimage-init: FAILED")
            || log.contains("Kernel panic")
    });
    let log = vm::strip_escapes(&guest.log());
    drop(guest);
    // No network: nothing for the host to have seen of the boot.
    super::judge::judge(
        expect,
        &log,
        Vec::new(),
        stop,
        timeout,
        started.elapsed().as_secs_f64(),
    )
}
