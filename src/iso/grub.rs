//! The boot loader of an ISO: GRUB core images built with Debian's own
//! `grub-mkimage` from grub-pc-bin (BIOS, El Torito) and grub-efi-amd64-bin
//! (UEFI, in a FAT image made with mtools), each finding the ISO by its
//! volume label, and the menu (`grub.cfg`) that boots the kernel with the
//! profile's command line. Everything is byte-for-byte reproducible:
//! grub-mkimage stamps a fixed time, mtools honours SOURCE_DATE_EPOCH and
//! the FAT volume gets a fixed serial number.

use std::path::Path;

use super::error::IsoError;
use crate::exec::Cmd;

/// Where Debian's GRUB packages put their module trees.
const BIOS_DIR: &str = "/usr/lib/grub/i386-pc";
const EFI_DIR: &str = "/usr/lib/grub/x86_64-efi";
/// The MBR that boots the BIOS core from a disk (the `dd`-to-USB case).
pub const HYBRID_MBR: &str = "/usr/lib/grub/i386-pc/boot_hybrid.img";

/// What both cores need: find the volume, read the menu, boot Linux, talk
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
    (EFI_DIR, "grub-efi-amd64-bin"),
    (HYBRID_MBR, "grub-pc-bin"),
];

/// The menu: one entry, shown for a moment on the screen and the serial line.
pub fn config(profile: &str, label: &str, kernel_args: &str) -> String {
    format!(
        "# mkimage iso: profile {profile}, volume {label}\n\
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

/// Write the BIOS core (`root/BIOS_IMAGE`) and the EFI system image
/// (`root/EFI_IMAGE`), both finding the volume `label`; `work` is scratch.
pub fn images(root: &Path, work: &Path, label: &str, epoch: u64) -> Result<(), IsoError> {
    let early = work.join("early.cfg");
    let text =
        format!("search --no-floppy --set=root --label {label}\nset prefix=($root)/boot/grub\n");
    std::fs::write(&early, text).map_err(|e| IsoError::io(&early, e))?;
    let mkimage = |format: &str, dir: &str, out: &Path, extra: &[&str]| {
        Cmd::new("grub-mkimage")
            .args(["-O", format, "-d", dir, "-p", "/boot/grub", "-c"])
            .arg(&early)
            .arg("-o")
            .arg(out)
            .args(MODULES)
            .args(extra)
            .run()
            .map(|_| ())
    };
    mkimage(
        "i386-pc-eltorito",
        BIOS_DIR,
        &root.join(BIOS_IMAGE),
        &["biosdisk"],
    )?;
    let efi = work.join("BOOTX64.EFI");
    mkimage("x86_64-efi", EFI_DIR, &efi, &["fat", "efi_gop"])?;
    fat_image(&efi, &root.join(EFI_IMAGE), epoch)
}

/// A FAT image holding `/EFI/BOOT/BOOTX64.EFI` (the removable-media path
/// every UEFI firmware boots), sized to fit, with fixed times and serial.
fn fat_image(efi: &Path, out: &Path, epoch: u64) -> Result<(), IsoError> {
    let size = std::fs::metadata(efi)
        .map_err(|e| IsoError::io(efi, e))?
        .len();
    // 512-byte sectors: the loader, plus room for the FAT and directories.
    let sectors = (size / 512 + 256).div_ceil(64) * 64;
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
    set_mtime(efi, epoch)?;
    mtools("mcopy")
        .args(["-m", "-i", &img])
        .arg(efi)
        .arg("::/EFI/BOOT/BOOTX64.EFI")
        .run()?;
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
    }
}
