//! The kernel command line an ISO boots with: the same parameters an iPXE
//! script gives a netbooting machine (`basefs=`, `basefs.sha256=`,
//! `basefs.verity=`, `overlayfs=`, `overlayfs.sha256=`, console, the
//! profile's args), from the same resolved profile. Offline, the images are
//! paths on the medium and `mkimage.media=LABEL` tells the init where;
//! online, they are content-addressed URLs on the server, and
//! `mkimage.api=` has the machine report its boot there.

use crate::serve::ipxe::encode_path;
use crate::serve::profiles::{Art, Resolved};

/// Where the images live on an offline medium.
pub const MEDIA_DIR: &str = "mkimage";

/// Where the init finds the images.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// On the medium itself (`--offline`).
    Media,
    /// On `mkimage serve` at this base URL (no trailing slash).
    Server(String),
}

/// The location of one image as the init is told it.
fn location(art: &Art, source: &Source) -> String {
    match (source, &art.remote) {
        (Source::Media, _) => format!("/{MEDIA_DIR}/{}", art.file),
        (Source::Server(_), Some(url)) => url.clone(),
        (Source::Server(base), None) => {
            format!("{base}/sha256/{}/{}", art.sha256, encode_path(&art.file))
        }
    }
}

/// The command line without the medium's label (which is derived from it).
pub fn render(resolved: &Resolved, source: &Source, console: &str) -> String {
    let mut words = vec![
        format!("basefs={}", location(&resolved.basefs, source)),
        format!("basefs.sha256={}", resolved.basefs.sha256),
    ];
    if let Some(v) = &resolved.basefs.verity {
        words.push(format!("basefs.verity={v}"));
    }
    if !resolved.overlays.is_empty() {
        let join = |f: &dyn Fn(&Art) -> String| {
            resolved
                .overlays
                .iter()
                .map(f)
                .collect::<Vec<_>>()
                .join(",")
        };
        words.push(format!("overlayfs={}", join(&|a| location(a, source))));
        words.push(format!("overlayfs.sha256={}", join(&|a| a.sha256.clone())));
    }
    // Online, the machine reports its boot to the server's node registry,
    // as a netbooted one does, and takes its node overlay from the boot
    // script it fetches there for its token (initrd/report.sh).
    if let Source::Server(base) = source {
        words.push(format!("mkimage.api={base}"));
        words.push("mkimage.node-overlay=script".to_string());
    }
    words.extend(
        [console, resolved.args.as_str()]
            .into_iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().to_string()),
    );
    words.join(" ")
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

    fn art(file: &str, sha: char) -> Art {
        Art {
            file: file.into(),
            sha256: sha.to_string().repeat(64),
            verity: None,
            remote: None,
        }
    }

    fn resolved() -> Resolved {
        let mut basefs = art("base.squashfs", 'a');
        basefs.verity = Some(format!("{}:4096", "c".repeat(64)));
        Resolved {
            profile: "p".into(),
            kernel: art("vmlinuz", '1'),
            initrd: art("initrd", '2'),
            basefs,
            overlays: vec![art("disc.cpio.gz", 'b'), art("x.cpio.gz", 'd')],
            args: "rootsize=2G ".into(),
        }
    }

    #[test]
    fn offline_names_paths_on_the_medium() {
        let line = render(&resolved(), &Source::Media, "console=ttyS0,115200");
        let want = format!(
            "basefs=/mkimage/base.squashfs basefs.sha256={a} basefs.verity={c}:4096 overlayfs=/mkimage/disc.cpio.gz,/mkimage/x.cpio.gz overlayfs.sha256={b},{d} console=ttyS0,115200 rootsize=2G",
            a = "a".repeat(64),
            b = "b".repeat(64),
            c = "c".repeat(64),
            d = "d".repeat(64)
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
        let line = render(&r, &Source::Server("http://10.0.0.1:8080".into()), "");
        assert!(
            line.starts_with(&format!(
                "basefs=http://10.0.0.1:8080/sha256/{}/base.squashfs ",
                "a".repeat(64)
            )),
            "{line}"
        );
        assert!(
            line.contains(" overlayfs=http://10.0.0.7/o.cpio.gz "),
            "{line}"
        );
        assert!(
            line.contains(" mkimage.api=http://10.0.0.1:8080 mkimage.node-overlay=script "),
            "reports to the server, takes its node overlay from there: {line}"
        );
        assert!(line.ends_with(" rootsize=2G"), "{line}");
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
