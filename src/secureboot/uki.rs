//! Unified kernel images: systemd-boot's EFI stub (`linuxx64.efi.stub`,
//! package systemd-boot-efi) with the kernel, the initrd, the command line
//! and an os-release added as PE sections by `objcopy`, then signed with
//! the site key by `sbsign`. The firmware verifies the signature over all
//! of it, so the command line — the basefs's URL, sha256 and dm-verity root
//! hash, each overlay's sha256 — is as trusted as the kernel. A UKI is made
//! per profile and holds nothing about one machine.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context};

use super::keys::Keys;
use crate::artifact::objects;
use crate::exec::Cmd;

/// systemd-boot-efi's stub.
pub const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

/// The profile a UKI is built for: its name, and its kernel's and
/// initrd's files in the served dir.
pub struct Profile<'a> {
    pub name: &'a str,
    pub kernel: &'a str,
    pub initrd: &'a str,
}

/// What goes into one UKI.
#[derive(Debug, Clone)]
pub struct Parts<'a> {
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub cmdline: &'a str,
    /// A name for its os-release (`PRETTY_NAME`): the profile.
    pub name: &'a str,
    /// The DER certificate node overlays' signatures are checked against
    /// (`keys::Keys::node_signer`), added to the initrd as [`NODE_SIGNER`].
    pub node_signer: Option<&'a Path>,
}

/// Where a UKI's initrd holds the node-signing certificate (DER).
pub const NODE_SIGNER: &str = "etc/mkimage/node-signer.cer";

/// `initrd`, then (4-byte aligned, as the kernel looks for the next
/// archive) an uncompressed newc cpio holding `cert` at [`NODE_SIGNER`]:
/// the kernel unpacks concatenated archives into one tree, so the init
/// finds it, inside the UKI's signature.
fn initrd_with_signer(initrd: &Path, cert: &Path, out: &Path) -> anyhow::Result<()> {
    use crate::archive::cpio::{write_newc, Entry, EntryKind};
    let mut bytes =
        fs::read(initrd).with_context(|| format!("cannot read {}", initrd.display()))?;
    let der = fs::read(cert).with_context(|| format!("cannot read {}", cert.display()))?;
    bytes.resize(bytes.len().div_ceil(4) * 4, 0);
    let entries = vec![
        Entry::new("etc", EntryKind::Dir, 0o755),
        Entry::new("etc/mkimage", EntryKind::Dir, 0o755),
        Entry::new(NODE_SIGNER, EntryKind::Data(der), 0o644),
    ];
    let bytes = write_newc(entries, bytes)?;
    fs::write(out, bytes).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}

/// Where the stub's last section ends (VMA + size) and its section alignment.
fn stub_layout(stub: &Path) -> anyhow::Result<(u64, u64)> {
    let headers = Cmd::new("objdump")
        .arg("-h")
        .arg("-w")
        .arg(stub)
        .run()?
        .stdout;
    let mut end = 0;
    for line in headers.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        // Idx Name Size VMA LMA File-off Algn Flags...
        if f.len() >= 7 && f[0].parse::<u32>().is_ok() {
            let size = u64::from_str_radix(f[2], 16)?;
            let vma = u64::from_str_radix(f[3], 16)?;
            end = end.max(vma + size);
        }
    }
    let private = Cmd::new("objdump").arg("-p").arg(stub).run()?.stdout;
    let align = private
        .lines()
        .find_map(|l| l.strip_prefix("SectionAlignment"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0x1000);
    if end == 0 {
        bail!("{}: objdump shows no sections", stub.display());
    }
    Ok((end, align.max(0x1000)))
}

fn align_up(n: u64, to: u64) -> u64 {
    n.div_ceil(to) * to
}

/// Build the UKI for `parts`, signed with `keys`, at `out` (written whole
/// or not at all).
pub fn build(parts: &Parts, keys: &Keys, out: &Path) -> anyhow::Result<()> {
    super::need(&[
        (STUB, "systemd-boot-efi"),
        ("/usr/bin/objcopy", "binutils"),
        ("/usr/bin/sbsign", "sbsigntool"),
    ])?;
    let dir = out.parent().context("the UKI path has no directory")?;
    let work = tempfile::Builder::new().prefix(".uki.").tempdir_in(dir)?;
    let osrel = work.path().join("os-release");
    fs::write(
        &osrel,
        format!(
            "ID=mkimage\nNAME=mkimage\nPRETTY_NAME=\"mkimage netboot ({})\"\n",
            parts.name.replace(['"', '\\', '\n'], "_")
        ),
    )?;
    let cmdline = work.path().join("cmdline");
    fs::write(&cmdline, parts.cmdline)?;
    let with_signer = work.path().join("initrd");
    let initrd = match parts.node_signer {
        Some(cert) => {
            initrd_with_signer(parts.initrd, cert, &with_signer)?;
            with_signer.as_path()
        }
        None => parts.initrd,
    };
    let (end, align) = stub_layout(Path::new(STUB))?;
    let mut at = align_up(end, align);
    let mut objcopy = Cmd::new("objcopy");
    for (name, file) in [
        (".osrel", osrel.as_path()),
        (".cmdline", cmdline.as_path()),
        (".initrd", initrd),
        (".linux", parts.kernel),
    ] {
        let size = fs::metadata(file)
            .with_context(|| format!("cannot read {}", file.display()))?
            .len();
        let mut add = std::ffi::OsString::from(format!("{name}="));
        add.push(file);
        objcopy = objcopy
            .arg("--add-section")
            .arg(add)
            .arg("--change-section-vma")
            .arg(format!("{name}={at:#x}"));
        at = align_up(at + size, align);
    }
    let unsigned = work.path().join("unsigned.efi");
    objcopy
        .arg(STUB)
        .arg(&unsigned)
        .run()
        .context("objcopy could not assemble the UKI")?;
    let signed = work.path().join("signed.efi");
    Cmd::new("sbsign")
        .arg("--key")
        .arg(&keys.key)
        .arg("--cert")
        .arg(&keys.cert)
        .arg("--output")
        .arg(&signed)
        .arg(&unsigned)
        .run()
        .context("sbsign could not sign the UKI with the site key")?;
    Cmd::new("sbverify")
        .arg("--cert")
        .arg(&keys.cert)
        .arg(&signed)
        .run()
        .context("the signed UKI does not verify against the site certificate")?;
    fs::rename(&signed, out).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}

/// The signed UKI of `profile` with `cmdline`, added to `dir`'s
/// content store (so `mkimage serve` answers it at `/sha256/HEX/NAME`, and
/// `publish` links it into a tree); its sha256 and its name, `PROFILE.efi`.
pub fn for_profile(
    dir: &Path,
    profile: &Profile,
    cmdline: &str,
    keys: &Keys,
) -> anyhow::Result<(String, String)> {
    let parts = profile;
    let profile = parts.name;
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
    if profile.is_empty() || profile.starts_with('.') || !profile.chars().all(plain) {
        bail!("profile `{profile}`: its UKI is named after it, so use letters, digits, `-`, `_` and `.` only (not first)");
    }
    let name = format!("{profile}.efi");
    let staged = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .tempdir_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    let out = staged.path().join(&name);
    build(
        &Parts {
            kernel: &dir.join(parts.kernel),
            initrd: &dir.join(parts.initrd),
            cmdline,
            name: profile,
            node_signer: Some(keys.node_signer().1),
        },
        keys,
        &out,
    )
    .with_context(|| format!("the UKI of profile {profile}"))?;
    let (_, sha) = crate::artifact::sha256_file(&out)?;
    objects::add(dir, &out, &sha)?;
    Ok((sha, name))
}

/// The command line a UKI carries (its `.cmdline` section).
pub fn cmdline_of(uki: &Path) -> anyhow::Result<String> {
    let work = tempfile::tempdir()?;
    let out = work.path().join("cmdline");
    Cmd::new("objcopy")
        .args(["-O", "binary", "--only-section=.cmdline"])
        .arg(uki)
        .arg(&out)
        .run()?;
    Ok(fs::read_to_string(out)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signer_certificate_follows_the_initrd_aligned() {
        let t = tempfile::tempdir().unwrap();
        let (initrd, cert, out) = (
            t.path().join("initrd"),
            t.path().join("c.cer"),
            t.path().join("out"),
        );
        fs::write(&initrd, b"12345").unwrap();
        fs::write(&cert, b"DER").unwrap();
        initrd_with_signer(&initrd, &cert, &out).unwrap();
        let all = fs::read(&out).unwrap();
        assert_eq!(&all[..8], b"12345\0\0\0");
        let (entries, _) = crate::archive::cpio::read_newc_prefix(&all[8..]).unwrap();
        let last = entries.last().unwrap();
        assert_eq!(last.path, NODE_SIGNER);
    }

    #[test]
    fn sections_align_up() {
        assert_eq!(super::align_up(0x19134, 0x1000), 0x1a000);
        assert_eq!(super::align_up(0x2000, 0x1000), 0x2000);
    }
}
