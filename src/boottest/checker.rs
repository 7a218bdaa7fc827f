//! The checker overlay: a cpio.gz holding a systemd unit and the script of
//! the boot config's assertions, which boot-test adds to the profile it
//! boots and serves (from its own small server, inside its private network
//! namespace) only to the VM under test. A production image carries no
//! test hook and runs nothing it downloads; boot-test works on any
//! systemd image, with or without the base role.

use std::net::Ipv4Addr;

use anyhow::Context;

use super::checks::{self, Expect};
use crate::archive::cpio::{self, Entry, EntryKind};

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
        Entry::new(
            format!("etc/systemd/system/{UNIT_NAME}"),
            EntryKind::Data(UNIT.as_bytes().to_vec()),
            0o644,
        ),
        dir("etc/systemd/system/multi-user.target.wants"),
        Entry::new(
            format!("etc/systemd/system/multi-user.target.wants/{UNIT_NAME}"),
            EntryKind::Symlink(format!("../{UNIT_NAME}")),
            0o777,
        ),
        dir("usr"),
        dir("usr/local"),
        dir("usr/local/sbin"),
        Entry::new(
            SCRIPT,
            EntryKind::Data(checks::script(expect).into_bytes()),
            0o755,
        ),
    ];
    Ok(cpio::write_newc_gz(entries, Vec::new(), 6)?)
}

/// Serve the overlay on `listen` (inside boot-test's private network
/// namespace) from a thread, on the boot server's own HTTP stack; returns
/// its URL as the guest sees it (`seen_as`: 10.0.2.2 with user networking)
/// and its sha256.
pub fn serve(
    expect: &[Expect],
    listen: Ipv4Addr,
    seen_as: Ipv4Addr,
) -> anyhow::Result<(String, String)> {
    let bytes = overlay(expect)?;
    let sha256 = crate::artifact::sha256_bytes(&bytes);
    let files = std::collections::HashMap::from([(format!("/{FILE}"), bytes::Bytes::from(bytes))]);
    let addr = crate::serve::adhoc::spawn((listen, 0).into(), files)
        .context("cannot start the checker overlay's server")?;
    Ok((format!("http://{seen_as}:{}/{FILE}", addr.port()), sha256))
}

/// The overlay's name in its URL.
const FILE: &str = "checker.cpio.gz";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_holds_an_enabled_unit_and_the_script() {
        let expect = vec![Expect::FileExists {
            file_exists: "/etc/hostname".into(),
        }];
        let bytes = overlay(&expect).unwrap();
        assert_eq!(bytes, overlay(&expect).unwrap(), "deterministic");
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&bytes[..]), &mut raw)
            .unwrap();
        let entries = cpio::read_newc(&raw[..]).unwrap();
        let find = |p: &str| {
            entries
                .iter()
                .find(|e| e.path == p)
                .unwrap_or_else(|| panic!("{p} missing"))
        };
        assert!(String::from_utf8_lossy(
            &find("etc/systemd/system/mkimage-boot-check.service").data
        )
        .contains("WantedBy=multi-user.target"));
        assert_eq!(
            find("etc/systemd/system/multi-user.target.wants/mkimage-boot-check.service").data,
            b"../mkimage-boot-check.service"
        );
        let script = String::from_utf8_lossy(&find(SCRIPT).data).to_string();
        assert!(
            script.contains("test -e /etc/hostname") && script.contains("mkimage-check: done"),
            "{script}"
        );
    }
}
