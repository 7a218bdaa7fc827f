//! The boot loader of an ISO, and the menu (`grub.cfg`) that boots the
//! kernel with the profile's command line.
//!
//! - BIOS: a GRUB core built with Debian's `grub-mkimage` from grub-pc-bin
//!   (El Torito), finding the ISO by its volume label.
//! - UEFI: Debian's signed chain, so the same ISO boots with Secure Boot on
//!   and off: the EFI system image (a FAT image made with mtools) holds
//!   shim-signed's shim as the removable-media loader `BOOTX64.EFI`,
//!   grub-efi-amd64-signed's GRUB CD image beside it as `grubx64.efi` (a
//!   `grub-mkimage` image is unsigned, and shim refuses it), and MokManager
//!   (`mmx64.efi`, which shim starts to enroll a key). That GRUB finds the
//!   disc by its `/.disk/info` (`DISK_INFO`) and reads `/boot/grub/grub.cfg`
//!   from it; shim verifies the kernel it loads (Debian's signed kernel).
//!
//! Everything is byte-for-byte reproducible: grub-mkimage stamps a fixed
//! time, the signed binaries are the packages' bytes, mtools honours
//! SOURCE_DATE_EPOCH and the FAT volume gets a fixed serial number.

use std::path::Path;

use super::error::IsoError;
use crate::exec::Cmd;

/// Where Debian's GRUB packages put their module trees.
const BIOS_DIR: &str = "/usr/lib/grub/i386-pc";
/// The MBR that boots the BIOS core from a disk (the `dd`-to-USB case).
pub const HYBRID_MBR: &str = "/usr/lib/grub/i386-pc/boot_hybrid.img";

/// grub-efi-amd64-signed's GRUB CD image (signed by Debian; shim trusts
/// it). Its built-in config finds the disc by `DISK_INFO`, then reads
/// `$prefix/grub.cfg` (prefix `/boot/grub` on that disc).
pub const GRUB_CD: &str = "/usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed";
/// shim-signed's MokManager, which shim starts from beside itself.
pub const MOK_MANAGER: &str = "/usr/lib/shim/mmx64.efi.signed";
/// The file the signed GRUB CD image searches for to find its disc.
pub const DISK_INFO: &str = ".disk/info";

/// What the BIOS core needs: find the volume, read the menu, boot Linux, talk
/// on the serial line (BMC serial-over-LAN).
const MODULES: &[&str] = &[
    "normal",
    "search",
    "search_label",
    "iso9660",
    "linux",
    "configfile",
    "echo",
    "serial",
    "terminal",
    "test",
    "part_msdos",
    "part_gpt",
];

/// The ISO's paths of the two images and the menu.
pub const BIOS_IMAGE: &str = "boot/grub/bios.img";
pub const EFI_IMAGE: &str = "boot/grub/efi.img";
pub const CONFIG: &str = "boot/grub/grub.cfg";
pub const KERNEL: &str = "boot/vmlinuz";
pub const INITRD: &str = "boot/initrd";

/// The tools an ISO build needs, and the Debian package of each.
pub const TOOLS: &[(&str, &str)] = &[
    ("xorriso", "xorriso"),
    ("grub-mkimage", "grub-common"),
    ("mformat", "mtools"),
    (BIOS_DIR, "grub-pc-bin"),
    (HYBRID_MBR, "grub-pc-bin"),
    (crate::secureboot::SHIM, "shim-signed"),
    (MOK_MANAGER, "shim-signed"),
    (GRUB_CD, "grub-efi-amd64-signed"),
];

/// The EFI system image's files: (path in the image, source).
const EFI_FILES: &[(&str, &str)] = &[
    ("::/EFI/BOOT/BOOTX64.EFI", crate::secureboot::SHIM),
    ("::/EFI/BOOT/grubx64.efi", GRUB_CD),
    ("::/EFI/BOOT/mmx64.efi", MOK_MANAGER),
];

/// The menu: one entry, shown for a moment on the screen and the serial
/// line. It first makes the volume `label` its root, so the kernel and
/// initrd come from this medium even when the signed GRUB found its config
/// through another disc's `/.disk/info`.
pub fn config(profile: &str, label: &str, kernel_args: &str) -> String {
    format!(
        "# mkimage iso: profile {profile}, volume {label}\n\
         search --no-floppy --set=root --label {label}\n\
         serial --unit=0 --speed=115200\n\
         terminal_input console serial\n\
         terminal_output console serial\n\
         set timeout=2\n\
         menuentry 'mkimage: {profile}' {{\n\
         \tlinux /{KERNEL} {kernel_args}\n\
         \tinitrd /{INITRD}\n\
         }}\n"
    )
}

/// Write the BIOS core (`root/BIOS_IMAGE`, finding the volume `label`),
/// the EFI system image (`root/EFI_IMAGE`) and `root/DISK_INFO`, by which
/// the signed GRUB finds the disc; `work` is scratch.
pub fn images(root: &Path, work: &Path, label: &str, epoch: u64) -> Result<(), IsoError> {
    let early = work.join("early.cfg");
    let text =
        format!("search --no-floppy --set=root --label {label}\nset prefix=($root)/boot/grub\n");
    std::fs::write(&early, text).map_err(|e| IsoError::io(&early, e))?;
    Cmd::new("grub-mkimage")
        .args([
            "-O",
            "i386-pc-eltorito",
            "-d",
            BIOS_DIR,
            "-p",
            "/boot/grub",
            "-c",
        ])
        .arg(&early)
        .arg("-o")
        .arg(root.join(BIOS_IMAGE))
        .args(MODULES)
        .arg("biosdisk")
        .run()?;
    let info = root.join(DISK_INFO);
    std::fs::create_dir_all(root.join(".disk")).map_err(|e| IsoError::io(&info, e))?;
    std::fs::write(&info, format!("mkimage {label}\n")).map_err(|e| IsoError::io(&info, e))?;
    fat_image(&root.join(EFI_IMAGE), work, epoch)
}

/// A FAT image holding shim at `/EFI/BOOT/BOOTX64.EFI` (the removable-media
/// path every UEFI firmware boots) and the signed GRUB and MokManager
/// beside it, sized to fit, with fixed times and serial.
fn fat_image(out: &Path, work: &Path, epoch: u64) -> Result<(), IsoError> {
    let mut size = 0;
    for (_, src) in EFI_FILES {
        let src = Path::new(src);
        size += std::fs::metadata(src)
            .map_err(|e| IsoError::io(src, e))?
            .len()
            .div_ceil(4096)
            * 4096;
    }
    // 512-byte sectors: the loaders, plus room for the FAT and directories.
    let sectors = (size / 512 + 512).div_ceil(64) * 64;
    let stamp = epoch.to_string();
    let img = out.to_string_lossy().into_owned();
    let mtools = |program: &str| {
        Cmd::new(program)
            .env("SOURCE_DATE_EPOCH", &stamp)
            .env("MTOOLS_SKIP_CHECK", "1")
    };
    let _ = std::fs::remove_file(out);
    mtools("mformat")
        .args([
            "-i",
            &img,
            "-C",
            "-T",
            &sectors.to_string(),
            "-h",
            "1",
            "-s",
            "32",
            "-N",
            "4d4b494d",
            "-v",
            "EFIBOOT",
            "::",
        ])
        .run()?;
    mtools("mmd")
        .args(["-i", &img, "::/EFI", "::/EFI/BOOT"])
        .run()?;
    for (dest, src) in EFI_FILES {
        // A copy dated `epoch`: mcopy -m keeps the file's mtime.
        let copy = work.join(dest.rsplit('/').next().unwrap_or("efi"));
        std::fs::copy(src, &copy).map_err(|e| IsoError::io(Path::new(src), e))?;
        set_mtime(&copy, epoch)?;
        mtools("mcopy")
            .args(["-m", "-i", &img])
            .arg(&copy)
            .arg(dest)
            .run()?;
    }
    Ok(())
}

/// Set a file's (or directory's) modification time.
pub fn set_mtime(path: &Path, epoch: u64) -> Result<(), IsoError> {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch);
    std::fs::File::open(path)
        .and_then(|f| f.set_modified(time))
        .map_err(|e| IsoError::io(path, e))
}

#[cfg(test)]
mod tests {
    #[test]
    fn menu_boots_the_kernel_with_the_args() {
        let cfg = super::config(
            "lab",
            "MKIMAGE_0",
            "basefs=/mkimage/b mkimage.media=MKIMAGE_0",
        );
        assert!(cfg.contains("\tlinux /boot/vmlinuz basefs=/mkimage/b mkimage.media=MKIMAGE_0\n\tinitrd /boot/initrd\n"), "{cfg}");
        assert!(cfg.contains("terminal_output console serial"));
        assert!(
            cfg.contains("\nsearch --no-floppy --set=root --label MKIMAGE_0\n"),
            "the kernel and initrd come from this medium: {cfg}"
        );
    }
}
