//! `mkimage iso` without QEMU: the hybrid image's type, volume label, boot
//! records and files, its GRUB menu and command line (offline and
//! network), the same bytes from two builds, the errors for bad requests;
//! and the init's offline code (initrd/media.sh + fetch.sh, run by
//! busybox sh) finding the volume by label and explaining a missing or
//! corrupt file. The ISO's boots are in tests/qemu/iso_boot.rs and bench/iso.sh.

use crate::common;
use crate::serve_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{mkimage, require, stderr, stdout};
use serve_support::{build, build_bootable, sha256_hex};

fn tools() {
    for (program, package) in [
        ("xorriso", "xorriso"),
        ("grub-mkimage", "grub-common"),
        ("mformat", "mtools"),
        ("file", "file"),
        ("mcopy", "mtools"),
        ("busybox", "busybox-static"),
    ] {
        require(program, package);
    }
}

/// An output dir with a kernel, initrd, basefs and a `disc` overlay, and a
/// boot config whose default profile applies the overlay.
fn artifacts(dir: &Path) -> PathBuf {
    build_bootable(dir, &vec![7u8; 300_000]);
    build(
        dir,
        "overlay",
        "disc",
        "disc.cpio.gz",
        b"overlay bytes",
        &[],
    );
    let config = dir.join("boot.yml");
    std::fs::write(&config, "default: lab\nconsole: console=ttyS0,115200\nprofiles:\n  - name: plain\n  - name: lab\n    overlays: [disc]\n    args: rootsize=2G\n").unwrap();
    config
}

fn iso(dir: &Path, config: &Path, extra: &[&str], out: &Path) -> std::process::Output {
    let mut c = mkimage();
    c.arg("iso")
        .arg("--dir")
        .arg(dir)
        .arg("--boot-config")
        .arg(config)
        .args(extra)
        .arg("--output")
        .arg(out);
    c.output().unwrap()
}

/// A file's bytes inside the ISO.
fn extract(image: &Path, path: &str) -> Vec<u8> {
    let dest = image.with_extension(path.replace('/', "_"));
    let o = Command::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(image)
        .args(["-extract", path])
        .arg(&dest)
        .output()
        .unwrap();
    assert!(o.status.success(), "extract {path}: {}", stderr(&o));
    let bytes = std::fs::read(&dest).unwrap();
    std::fs::remove_file(&dest).unwrap();
    bytes
}

fn files(image: &Path) -> Vec<String> {
    let o = Command::new("xorriso")
        .arg("-indev")
        .arg(image)
        .args(["-find", "/", "-type", "f"])
        .output()
        .unwrap();
    stdout(&o)
        .lines()
        .map(|l| l.trim_matches('\'').to_string())
        .collect()
}

#[test]
fn offline_iso_is_hybrid_reproducible_and_complete() {
    tools();
    let tmp = tempfile::tempdir().unwrap();
    let config = artifacts(tmp.path());
    let (a, b) = (tmp.path().join("a.iso"), tmp.path().join("b.iso"));
    let o = iso(tmp.path(), &config, &["--offline"], &a);
    assert!(o.status.success(), "{}", stderr(&o));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert!(iso(tmp.path(), &config, &["--offline"], &b)
        .status
        .success());
    let bytes = std::fs::read(&a).unwrap();
    assert!(
        bytes == std::fs::read(&b).unwrap(),
        "two builds of the same inputs differ"
    );
    let label = it_is_a_bootable_disc_and_a_disk(&a, &bytes);
    let (names, cfg) = it_holds_the_kernel_images_and_command_line(&a, &label);
    the_efi_image_holds_debians_signed_chain(tmp.path(), &a);
    assert!(names.iter().any(|n| n == "/.disk/info"), "{names:?}");
    assert!(
        cfg.starts_with(&format!(
            "# mkimage iso: profile lab, volume {label}\nsearch --no-floppy --set=root --label {label}\n"
        )),
        "{cfg}"
    );
}

/// `file` says a bootable ISO 9660 with an MBR; as a disk (a USB stick):
/// GRUB's MBR (55 AA), a protective MBR entry (EE) and a GPT whose EFI
/// system partition is the EFI image. Gives the volume label.
fn it_is_a_bootable_disc_and_a_disk(a: &Path, bytes: &[u8]) -> String {
    let kind = stdout(&Command::new("file").arg(a).output().unwrap());
    assert!(
        kind.contains("ISO 9660")
            && kind.contains("(bootable)")
            && kind.contains("DOS/MBR boot sector"),
        "{kind}"
    );
    assert_eq!(&bytes[510..512], &[0x55, 0xaa]);
    assert_eq!(bytes[446 + 4], 0xee);
    assert_eq!(&bytes[512..520], b"EFI PART");
    let area = stdout(
        &Command::new("xorriso")
            .arg("-indev")
            .arg(a)
            .args(["-report_system_area", "plain"])
            .output()
            .unwrap(),
    );
    assert!(
        area.contains("grub2-mbr") && area.contains("28732ac11ff8d211ba4b00a0c93ec93b"),
        "{area}"
    );
    assert!(
        area.lines()
            .any(|l| l.starts_with("GPT partition path") && l.ends_with("/boot/grub/efi.img")),
        "{area}"
    );
    let label = String::from_utf8_lossy(&bytes[32808..32840])
        .trim_end()
        .to_string();
    assert!(
        label.starts_with("MKIMAGE_") && label.len() == 16,
        "{label}"
    );
    label
}

/// The boot files, the images and the command line, also in grub.cfg.
/// Gives the ISO's file names and grub.cfg.
fn it_holds_the_kernel_images_and_command_line(a: &Path, label: &str) -> (Vec<String>, String) {
    let mut names = files(a);
    names.sort();
    let want = [
        "/boot/grub/bios.img",
        "/boot/grub/efi.img",
        "/boot/grub/grub.cfg",
        "/boot/initrd",
        "/boot/vmlinuz",
        "/mkimage/base.squashfs",
        "/mkimage/cmdline",
        "/mkimage/disc.cpio.gz",
    ];
    assert!(
        want.iter().all(|w| names.iter().any(|n| n == w)),
        "{names:?}"
    );
    assert_eq!(extract(a, "/boot/vmlinuz"), b"kernel");
    assert_eq!(
        sha256_hex(&extract(a, "/mkimage/base.squashfs")),
        sha256_hex(&vec![7u8; 300_000])
    );
    let line = String::from_utf8(extract(a, "/mkimage/cmdline")).unwrap();
    let want = format!(
        "mkimage.media={label} basefs=/mkimage/base.squashfs basefs.sha256={} overlayfs=/mkimage/disc.cpio.gz overlayfs.sha256={} mkimage.need=1 console=ttyS0,115200 rootsize=2G\n",
        sha256_hex(&vec![7u8; 300_000]),
        sha256_hex(b"overlay bytes")
    );
    assert_eq!(line, want);
    let cfg = String::from_utf8(extract(a, "/boot/grub/grub.cfg")).unwrap();
    assert!(
        cfg.contains(&format!("\tlinux /boot/vmlinuz {}", line.trim()))
            && cfg.contains("\tinitrd /boot/initrd"),
        "{cfg}"
    );
    (names, cfg)
}

/// The EFI image holds the removable-media loader.
fn the_efi_image_holds_debians_signed_chain(tmp: &Path, a: &Path) {
    let efi = tmp.join("efi.img");
    std::fs::write(&efi, extract(a, "/boot/grub/efi.img")).unwrap();
    let dir = stdout(
        &Command::new("mdir")
            .args(["-b", "-i"])
            .arg(&efi)
            .arg("::/EFI/BOOT")
            .output()
            .unwrap(),
    );
    // Debian's signed chain, so the ISO boots with Secure Boot on and off:
    // shim as the removable-media loader, the signed GRUB CD image beside
    // it, which finds the disc by /.disk/info and reads /boot/grub/grub.cfg.
    for name in ["BOOTX64.EFI", "grubx64.efi", "mmx64.efi"] {
        assert!(dir.contains(name), "{name}: {dir}");
    }
    let loader = tmp.join("loader.efi");
    let o = Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(&efi)
        .arg("::/EFI/BOOT/BOOTX64.EFI")
        .arg(&loader)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(&loader).unwrap(),
        std::fs::read("/usr/lib/shim/shimx64.efi.signed").unwrap(),
        "BOOTX64.EFI is shim-signed's shim"
    );
}

#[test]
fn network_iso_names_the_server_and_carries_no_images() {
    tools();
    let tmp = tempfile::tempdir().unwrap();
    let config = artifacts(tmp.path());
    let out = tmp.path().join("net.iso");
    let o = iso(
        tmp.path(),
        &config,
        &["--server", "http://10.0.0.1:8080/", "--profile", "plain"],
        &out,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let line = String::from_utf8(extract(&out, "/mkimage/cmdline")).unwrap();
    let sha = sha256_hex(&vec![7u8; 300_000]);
    assert_eq!(line, format!("mkimage.api=http://10.0.0.1:8080 mkimage.node-overlay=script basefs=http://10.0.0.1:8080/sha256/{sha}/base.squashfs basefs.sha256={sha} mkimage.need=1 console=ttyS0,115200\n"));
    assert!(!files(&out).iter().any(|f| f.ends_with(".squashfs")));
}

#[test]
fn bad_requests_are_explained_and_write_nothing() {
    tools();
    let tmp = tempfile::tempdir().unwrap();
    let config = artifacts(tmp.path());
    let out = tmp.path().join("x.iso");
    for (extra, why) in [
        (&[][..], "give --offline"),
        (&["--offline", "--profile", "nope"][..], "no such profile"),
        (&["--server", "10.0.0.1"][..], "http://HOST:PORT"),
    ] {
        let o = iso(tmp.path(), &config, extra, &out);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(why), "{extra:?}: {}", stderr(&o));
    }
    let o = iso(&tmp.path().join("nothing"), &config, &["--offline"], &out);
    assert!(
        o.status.code() == Some(2) && stderr(&o).contains("has no manifest.json: build first"),
        "{}",
        stderr(&o)
    );
    let sha = "ab".repeat(32);
    std::fs::write(&config, format!("profiles:\n  - name: r\n    overlays: [{{url: 'http://10.0.0.7/o.cpio.gz', sha256: {sha}}}]\n")).unwrap();
    let o = iso(tmp.path(), &config, &["--offline"], &out);
    assert!(
        stderr(&o).contains("is on another server") && o.status.code() == Some(2),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".mkimage-iso"))
        .collect();
    assert!(leftovers.is_empty(), "work dirs left: {leftovers:?}");
}

/// The init's offline code on a real ISO: iso_label reads the volume id,
/// and a fetch from the "medium" (the extracted tree) succeeds, or fails
/// with the reason the console would show.
#[test]
fn init_finds_the_label_and_explains_missing_and_corrupt_files() {
    tools();
    let tmp = tempfile::tempdir().unwrap();
    let config = artifacts(tmp.path());
    let image = tmp.path().join("a.iso");
    assert!(iso(tmp.path(), &config, &["--offline"], &image)
        .status
        .success());
    let label = String::from_utf8_lossy(&std::fs::read(&image).unwrap()[32808..32840])
        .trim_end()
        .to_string();
    let media = tmp.path().join("media");
    std::fs::create_dir_all(media.join("mkimage")).unwrap();
    std::fs::write(
        media.join("mkimage/disc.cpio.gz"),
        extract(&image, "/mkimage/disc.cpio.gz"),
    )
    .unwrap();
    let init = common::repo().join("initrd");
    let script = format!(
        r#"say() {{ echo "$*"; }}; step() {{ :; }}
RETRIES=1; BACKOFF=1
. {init}/fetch.sh; . {init}/media.sh
echo "label=$(iso_label {image})"
echo "none=$(iso_label {init}/media.sh)"
MEDIA={label}; MEDIA_DIR={media}; MEDIA_DEV=/dev/sr0
fetch /mkimage/disc.cpio.gz {tmp}/ok sha256_is {good} && echo "ok=$(cat {tmp}/ok)"
fetch /mkimage/disc.cpio.gz {tmp}/bad sha256_is {bad} || echo "WHY=$WHY"
fetch /mkimage/base.squashfs {tmp}/missing || echo "WHY=$WHY"
"#,
        init = init.display(),
        image = image.display(),
        media = media.display(),
        tmp = tmp.path().display(),
        good = sha256_hex(b"overlay bytes"),
        bad = "0".repeat(64),
    );
    let o = Command::new("busybox")
        .args(["sh", "-c", &script])
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(
        out.contains(&format!("label={label}\n")) && out.contains("none=\n"),
        "{out}{}",
        stderr(&o)
    );
    assert!(out.contains("ok=overlay bytes\n"), "{out}");
    assert!(
        out.contains(&format!(
            "WHY=sha256 mismatch: expected {}, got {} (after 1 tries)",
            "0".repeat(64),
            sha256_hex(b"overlay bytes")
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "WHY=download failed: /mkimage/base.squashfs is not on the medium {label} (/dev/sr0)"
        )),
        "{out}"
    );
}

#[test]
fn node_iso_carries_its_static_network_and_offline_its_node_overlay() {
    tools();
    let tmp = tempfile::tempdir().unwrap();
    let config = artifacts(tmp.path());
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}nodes:\n  node07:\n    mac: 52:54:00:12:34:56\n    profile: lab\n    network: {{address: 10.0.1.7/24, gateway: 10.0.1.1, dns: [10.0.1.1]}}\n    vars: {{rack: r12}}\n")).unwrap();
    let net = tmp.path().join("net.iso");
    let o = iso(
        tmp.path(),
        &config,
        &["--server", "http://10.0.1.5:8080", "--node", "node07"],
        &net,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let line = String::from_utf8(extract(&net, "/mkimage/cmdline")).unwrap();
    for want in [
        " BOOTIF=01-52-54-00-12-34-56 ",
        " ip=10.0.1.7::10.0.1.1:255.255.255.0:node07::off:10.0.1.1:",
        "/disc.cpio.gz ",
    ] {
        assert!(line.contains(want), "{want} not in {line}");
    }
    let offline = tmp.path().join("offline.iso");
    let o = iso(
        tmp.path(),
        &config,
        &["--offline", "--node", "node07"],
        &offline,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let line = String::from_utf8(extract(&offline, "/mkimage/cmdline")).unwrap();
    let node = extract(&offline, "/mkimage/node.cpio.gz");
    assert!(
        line.contains(&format!(
            "overlayfs=/mkimage/disc.cpio.gz,/mkimage/node.cpio.gz overlayfs.sha256={},{} ",
            sha256_hex(b"overlay bytes"),
            sha256_hex(&node)
        )),
        "{line}"
    );
    let o = iso(
        tmp.path(),
        &config,
        &["--offline", "--node", "node99"],
        &offline,
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--node node99: not in"),
        "{}",
        stderr(&o)
    );
}
