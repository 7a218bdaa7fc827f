//! The kernel command line an ISO boots with: the same parameters an iPXE
//! script gives a netbooting machine (`basefs=`, `basefs.sha256=`,
//! `basefs.verity=`, `overlayfs=`, `overlayfs.sha256=`, console, the
//! profile's args), from the same resolved profile. Offline, the images are
//! paths on the medium and `mkimage.media=LABEL` tells the init where;
//! online, they are content-addressed URLs on the server, and
//! `mkimage.api=` has the machine report its boot there.

use crate::serve::cmdline::{Cmdline, NodeOverlay};
pub use crate::serve::cmdline::{Source, MEDIA_DIR};
use crate::serve::profiles::Resolved;

/// The command line without the medium's label (which is derived from it).
/// Online, the machine reports its boot to the server's node registry, as a
/// netbooted one does.
pub fn render(resolved: &Resolved, source: &Source, console: &str) -> String {
    Cmdline {
        resolved,
        source: source.clone(),
        servers: &[],
        bootif: None,
        reports: true,
        token: None,
        // Its node overlay comes from the boot script the init fetches
        // for its token (initrd/report.sh); a medium names none itself.
        node_overlay: if matches!(source, Source::Server(_)) {
            NodeOverlay::Script
        } else {
            NodeOverlay::Absent
        },
        console,
    }
    .render()
}

/// The ISO 9660 volume id of an offline medium: names its content, so two
/// different mkimage media attached at once are told apart.
pub fn label(cmdline: &str) -> String {
    format!(
        "MKIMAGE_{}",
        crate::artifact::sha256_bytes(cmdline.as_bytes())[..8].to_ascii_uppercase()
    )
}

/// The volume label an offline command line names (`mkimage.media=`).
pub fn media_label(cmdline: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("mkimage.media="))
        .map(str::to_string)
}

/// `cmdline` with one more overlay, applied after the others.
pub fn add_overlay(cmdline: &str, location: &str, sha256: &str) -> String {
    let mut words: Vec<String> = cmdline.split_whitespace().map(str::to_string).collect();
    for (key, value) in [("overlayfs=", location), ("overlayfs.sha256=", sha256)] {
        match words.iter_mut().find(|w| w.starts_with(key)) {
            Some(w) => *w = format!("{w},{value}"),
            None => words.push(format!("{key}{value}")),
        }
    }
    words.join(" ")
}

/// The command line as a GRUB word list: each word single-quoted when it
/// holds anything GRUB would interpret.
pub fn grub_words(cmdline: &str) -> Result<String, String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "=,.:/_+-%@".contains(c);
    cmdline
        .split_whitespace()
        .map(|w| match w {
            w if w.chars().all(plain) => Ok(w.to_string()),
            w if w.contains('\'') => Err(format!(
                "kernel argument `{w}` contains a single quote, which the GRUB menu cannot carry"
            )),
            w => Ok(format!("'{w}'")),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(|w| w.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::cmdline::fixtures::{self, art};

    fn resolved() -> Resolved {
        let mut r = fixtures::resolved(vec![art("disc.cpio.gz", 'e'), art("x.cpio.gz", 'f')]);
        r.basefs.size = Some(3 << 20);
        r.overlays[0].size = Some(1 << 20);
        r.overlays[1].size = Some(1);
        r
    }

    #[test]
    fn offline_names_paths_on_the_medium() {
        let line = render(&resolved(), &Source::Media, "console=ttyS0,115200");
        let want = format!(
            "basefs=/mkimage/basefs.squashfs basefs.sha256={b} basefs.verity={d}:4096 overlayfs=/mkimage/disc.cpio.gz,/mkimage/x.cpio.gz overlayfs.sha256={e},{f} mkimage.need=5 console=ttyS0,115200 rootsize=2G quiet",
            b = "b".repeat(64),
            d = "d".repeat(64),
            e = "e".repeat(64),
            f = "f".repeat(64)
        );
        assert_eq!(line, want);
        assert_eq!(label(&line).len(), 16);
        assert_eq!(label(&line), label(&line));
        assert_ne!(label(&line), label("other"));
    }

    #[test]
    fn online_names_content_addressed_urls() {
        let mut r = resolved();
        r.overlays.truncate(1);
        r.overlays[0].remote = Some("http://10.0.0.7/o.cpio.gz".into());
        r.overlays[0].size = None;
        let line = render(&r, &Source::Server("http://10.0.0.1:8080".into()), "");
        assert!(
            line.starts_with(&format!(
                "mkimage.api=http://10.0.0.1:8080 mkimage.node-overlay=script basefs=http://10.0.0.1:8080/sha256/{}/basefs.squashfs ",
                "b".repeat(64)
            )),
            "{line}"
        );
        assert!(
            line.contains(" overlayfs=http://10.0.0.7/o.cpio.gz "),
            "{line}"
        );
        assert!(
            !line.contains("mkimage.need="),
            "a remote overlay's size is unknown: {line}"
        );
        assert!(line.ends_with(" rootsize=2G quiet"), "{line}");
    }

    #[test]
    fn an_overlay_is_added_last() {
        let line = "mkimage.media=MKIMAGE_1 basefs=/mkimage/b overlayfs=/mkimage/o overlayfs.sha256=aa console=ttyS0";
        assert_eq!(add_overlay(line, "/mkimage/c", "bb"), "mkimage.media=MKIMAGE_1 basefs=/mkimage/b overlayfs=/mkimage/o,/mkimage/c overlayfs.sha256=aa,bb console=ttyS0");
        assert_eq!(
            add_overlay("basefs=/x", "/c", "bb"),
            "basefs=/x overlayfs=/c overlayfs.sha256=bb"
        );
        assert_eq!(media_label(line).as_deref(), Some("MKIMAGE_1"));
        assert_eq!(media_label("basefs=http://x/b"), None);
    }

    #[test]
    fn grub_quoting() {
        assert_eq!(grub_words("a=b  c=$x;y").unwrap(), "a=b 'c=$x;y'");
        assert!(grub_words("a='b'").unwrap_err().contains("single quote"));
    }
}
