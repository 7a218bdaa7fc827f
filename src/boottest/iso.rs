//! `mkimage boot-test --iso FILE`: boot an offline ISO as a CD-ROM with no
//! network at all — the VM's NIC is connected to nothing, so the discovery
//! still sees the hardware but no packet leaves — and judge the same
//! assertions on the serial console. The checker overlay goes onto a test
//! copy of the ISO (`iso::remaster`); the DNS assertion needs a network
//! and is left out.

use std::path::Path;
use std::time::{Duration, Instant};

use super::checks::Expect;
use super::config::BootTestConfig;
use super::request::Request;
use super::{checker, vm};

pub fn run(
    req: &Request,
    test: &BootTestConfig,
    expect: &[Expect],
    file: &Path,
) -> anyhow::Result<()> {
    if !file.is_file() {
        return Err(crate::UsageError(format!(
            "--iso {}: no such file (build one with mkimage iso --offline --output FILE)",
            file.display()
        ))
        .into());
    }
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
    let timeout = Duration::from_secs(req.timeout.or(test.timeout).unwrap_or(600));
    tracing::info!(
        "booting {} as a CD-ROM ({}, no network, {} MiB); console: {}",
        file.display(),
        if spec.uefi { "UEFI" } else { "BIOS" },
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
