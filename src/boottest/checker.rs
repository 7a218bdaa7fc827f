//! The checker overlay: a cpio.gz holding a systemd unit and the script of
//! the boot config's assertions, which boot-test adds to the profile it
//! boots and serves (with busybox httpd, inside its private network
//! namespace) only to the VM under test. A production image carries no
//! test hook and runs nothing it downloads; boot-test works on any
//! systemd image, with or without the base role.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use anyhow::Context;

use super::checks::{self, Expect};
use crate::archive::cpio::{self, Entry, EntryKind};
use crate::exec::Cmd;

/// The unit, from the repository's `boottest/` data dir.
const UNIT: &str = include_str!("../../boottest/mkimage-boot-check.service");
const UNIT_NAME: &str = "mkimage-boot-check.service";
/// Where the script goes in the booted system.
pub const SCRIPT: &str = "usr/local/sbin/mkimage-boot-check";

/// The overlay's bytes (deterministic: fixed mtimes, sorted).
pub fn overlay(expect: &[Expect]) -> anyhow::Result<Vec<u8>> {
    let dir = |p: &str| Entry::new(p, EntryKind::Dir, 0o755);
    let entries = vec![
        dir("etc"),
        dir("etc/systemd"),
        dir("etc/systemd/system"),
        Entry::new(format!("etc/systemd/system/{UNIT_NAME}"), EntryKind::Data(UNIT.as_bytes().to_vec()), 0o644),
        dir("etc/systemd/system/multi-user.target.wants"),
        Entry::new(format!("etc/systemd/system/multi-user.target.wants/{UNIT_NAME}"), EntryKind::Symlink(format!("../{UNIT_NAME}")), 0o777),
        dir("usr"),
        dir("usr/local"),
        dir("usr/local/sbin"),
        Entry::new(SCRIPT, EntryKind::Data(checks::script(expect).into_bytes()), 0o755),
    ];
    Ok(cpio::write_newc_gz(entries, Vec::new(), 6)?)
}

/// busybox httpd serving one directory on 127.0.0.1, stopped by its pid.
pub struct Server {
    child: Child,
    pub port: u16,
}

impl Server {
    /// Serve `dir` (the caller is inside its private network namespace).
    pub fn start(dir: &Path) -> anyhow::Result<Server> {
        if !crate::exec::have("busybox") {
            return Err(crate::UsageError("boot-test serves its checker with busybox httpd: apt-get install -y busybox-static".into()).into());
        }
        let port = super::free_port()?;
        let child = Cmd::new("busybox")
            .args(["httpd", "-f", "-p", &format!("127.0.0.1:{port}"), "-h"])
            .arg(dir)
            .spawn(Stdio::null(), Stdio::null())
            .context("cannot start busybox httpd for the checker overlay")?;
        let server = Server { child, port };
        super::wait_for_port(port, "busybox httpd (the checker overlay)")?;
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        super::vm::stop_child(&mut self.child);
    }
}

/// Write the overlay into `dir` and return its file.
pub fn write(dir: &Path, expect: &[Expect]) -> anyhow::Result<(PathBuf, String)> {
    let bytes = overlay(expect)?;
    let path = dir.join("checker.cpio.gz");
    std::fs::write(&path, &bytes).with_context(|| format!("cannot write {}", path.display()))?;
    Ok((path, crate::artifact::sha256_bytes(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_holds_an_enabled_unit_and_the_script() {
        let expect = vec![Expect::FileExists { file_exists: "/etc/hostname".into() }];
        let bytes = overlay(&expect).unwrap();
        assert_eq!(bytes, overlay(&expect).unwrap(), "deterministic");
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&bytes[..]), &mut raw).unwrap();
        let entries = cpio::read_newc(&raw[..]).unwrap();
        let find = |p: &str| entries.iter().find(|e| e.path == p).unwrap_or_else(|| panic!("{p} missing"));
        assert!(String::from_utf8_lossy(&find("etc/systemd/system/mkimage-boot-check.service").data).contains("WantedBy=multi-user.target"));
        assert_eq!(find("etc/systemd/system/multi-user.target.wants/mkimage-boot-check.service").data, b"../mkimage-boot-check.service");
        let script = String::from_utf8_lossy(&find(SCRIPT).data).to_string();
        assert!(script.contains("test -e /etc/hostname") && script.contains("mkimage-check: done"), "{script}");
    }
}
