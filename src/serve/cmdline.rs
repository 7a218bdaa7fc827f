//! The kernel command line of the boot contract
//! (`docs/reference/cmdline.md`), built in one place for every way a
//! machine boots: an iPXE script (`serve::ipxe`), a GRUB config and a
//! signed UKI (`serve::grub`, `boottest::secure`), and an ISO
//! (`iso::cmdline`). Each passes what differs: where the init finds the
//! images (a server's base URL, or the medium), the machine (`BOOTIF=`),
//! whether it reports to the node registry, and its boot token.
//!
//! The words, in this order: `BOOTIF=`, `mkimage.api=`, `mkimage.token=`,
//! `mkimage.node-overlay=`, `basefs=`, `basefs.sha256=`, `basefs.verity=`, `overlayfs=`,
//! `overlayfs.sha256=`, `mkimage.servers=`, `mkimage.need=`, the console,
//! the profile's own arguments.

use super::profiles::{Art, Resolved};

/// Where the images live on an offline medium.
pub const MEDIA_DIR: &str = "mkimage";

/// Where the init finds the images.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// On the medium itself (`iso --offline`).
    Media,
    /// On `mkimage serve` at this base URL (no trailing slash).
    Server(String),
}

/// One machine's (or one profile's) command line, before rendering.
pub struct Cmdline<'a> {
    pub resolved: &'a Resolved,
    pub source: Source,
    /// Every server the init may fetch from, in order (`mkimage.servers=`
    /// when there is more than one).
    pub servers: &'a [String],
    /// The `BOOTIF=` word (see [`bootif`]); none for a UKI or an ISO.
    pub bootif: Option<String>,
    /// The init reports each stage to the source server (`mkimage.api=`).
    pub reports: bool,
    /// The machine's boot token (`serve::tokens`); never in a UKI.
    pub token: Option<&'a str>,
    /// Whether the init takes the node overlay named in the boot script it
    /// fetches for its token (`mkimage.node-overlay=`).
    pub node_overlay: NodeOverlay,
    pub console: &'a str,
}

/// `mkimage.node-overlay=`: what the init does with the node overlay the
/// boot script it fetches for its token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeOverlay {
    /// No word: the command line names the machine's overlays itself (an
    /// iPXE script, a GRUB config), or names none.
    Absent,
    /// `script`: take it on the script's word (an ISO made with `--server`).
    Script,
    /// `signed`: take it only when its signature (`…/node.cpio.gz.sig`)
    /// verifies against the certificate in the initrd (a signed UKI).
    Signed,
}

/// `BOOTIF=` for a machine's MAC (iPXE's `${netX/mac:hexhyp}` works too).
pub fn bootif(mac: &str) -> String {
    format!("BOOTIF=01-{}", mac.replace(':', "-"))
}

/// Where the init is told to fetch one image: its remote URL, its
/// content-addressed URL on the server, or its path on the medium.
pub fn location(art: &Art, source: &Source) -> String {
    match (source, &art.remote) {
        (Source::Media, _) => format!("/{MEDIA_DIR}/{}", art.file),
        (Source::Server(_), Some(url)) => url.clone(),
        (Source::Server(base), None) => {
            format!("{base}/sha256/{}/{}", art.sha256, encode_path(&art.file))
        }
    }
}

/// The MiB the images take in RAM at the least (the basefs and every
/// overlay as downloaded), when the sizes of all are known: the init
/// refuses to start a boot that cannot fit (`mkimage.need=`).
pub fn need_mib(resolved: &Resolved) -> Option<u64> {
    let mut bytes = resolved.basefs.size?;
    for o in &resolved.overlays {
        bytes += o.size?;
    }
    Some(bytes.div_ceil(1 << 20))
}

impl Cmdline<'_> {
    /// The command line as one string of words.
    pub fn render(&self) -> String {
        let r = self.resolved;
        let mut words: Vec<String> = self.bootif.iter().cloned().collect();
        if let (true, Source::Server(base)) = (self.reports, &self.source) {
            words.push(format!("mkimage.api={base}"));
            if let Some(token) = self.token {
                words.push(format!("mkimage.token={token}"));
            }
            match self.node_overlay {
                NodeOverlay::Absent => {}
                NodeOverlay::Script => words.push("mkimage.node-overlay=script".to_string()),
                NodeOverlay::Signed => words.push("mkimage.node-overlay=signed".to_string()),
            }
        }
        words.push(format!("basefs={}", location(&r.basefs, &self.source)));
        words.push(format!("basefs.sha256={}", r.basefs.sha256));
        if let Some(v) = &r.basefs.verity {
            words.push(format!("basefs.verity={v}"));
        }
        if !r.overlays.is_empty() {
            let join =
                |f: &dyn Fn(&Art) -> String| r.overlays.iter().map(f).collect::<Vec<_>>().join(",");
            words.push(format!(
                "overlayfs={}",
                join(&|a| location(a, &self.source))
            ));
            words.push(format!("overlayfs.sha256={}", join(&|a| a.sha256.clone())));
        }
        if self.servers.len() > 1 {
            words.push(format!("mkimage.servers={}", self.servers.join(",")));
        }
        if let Some(mib) = need_mib(r) {
            words.push(format!("mkimage.need={mib}"));
        }
        words.extend(
            [self.console, r.args.as_str()]
                .into_iter()
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.trim().to_string()),
        );
        words.join(" ")
    }
}

/// Percent-encode a file name for a URL path (unreserved characters stay).
pub fn encode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/+".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Test fixtures shared by the modules that render command lines.
#[cfg(test)]
pub mod fixtures {
    use super::*;

    /// An artifact whose sha256 is `c` 64 times.
    pub fn art(file: &str, c: char) -> Art {
        Art {
            file: file.into(),
            sha256: c.to_string().repeat(64),
            verity: None,
            remote: None,
            size: None,
        }
    }

    /// A profile with a verity basefs (`b`, tree `d`), kernel `a`, initrd
    /// `c` and the overlays given.
    pub fn resolved(overlays: Vec<Art>) -> Resolved {
        let mut basefs = art("basefs.squashfs", 'b');
        basefs.verity = Some(format!("{}:4096", "d".repeat(64)));
        Resolved {
            profile: "discovery".into(),
            kernel: art("vmlinuz", 'a'),
            initrd: art("initrd.initrd", 'c'),
            basefs,
            overlays,
            args: "rootsize=2G quiet ".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{art, resolved};
    use super::*;

    fn line<'a>(r: &'a Resolved, source: Source, servers: &'a [String]) -> Cmdline<'a> {
        Cmdline {
            resolved: r,
            source,
            servers,
            bootif: Some(bootif("52:54:00:12:34:56")),
            reports: true,
            token: Some("0a1b"),
            node_overlay: NodeOverlay::Absent,
            console: "console=ttyS0,115200",
        }
    }

    #[test]
    fn words_come_in_the_contract_order() {
        let r = resolved(vec![art("o.cpio.gz", 'e')]);
        let servers = ["http://s:1".to_string(), "http://t:2".to_string()];
        let got = line(&r, Source::Server("http://s:1".into()), &servers).render();
        let want = format!(
            "BOOTIF=01-52-54-00-12-34-56 mkimage.api=http://s:1 mkimage.token=0a1b \
             basefs=http://s:1/sha256/{b}/basefs.squashfs basefs.sha256={b} basefs.verity={d}:4096 \
             overlayfs=http://s:1/sha256/{e}/o.cpio.gz overlayfs.sha256={e} \
             mkimage.servers=http://s:1,http://t:2 console=ttyS0,115200 rootsize=2G quiet",
            b = "b".repeat(64),
            d = "d".repeat(64),
            e = "e".repeat(64),
        );
        assert_eq!(got, want);
    }

    #[test]
    fn a_medium_gets_paths_and_no_reports_or_token() {
        let r = resolved(vec![art("o.cpio.gz", 'e')]);
        let mut l = line(&r, Source::Media, &[]);
        l.bootif = None;
        let got = l.render();
        assert!(got.starts_with("basefs=/mkimage/basefs.squashfs "), "{got}");
        assert!(got.contains(" overlayfs=/mkimage/o.cpio.gz "), "{got}");
        assert!(
            !got.contains("mkimage.api") && !got.contains("token"),
            "{got}"
        );
    }

    #[test]
    fn without_reports_there_is_no_token_either() {
        let r = resolved(vec![]);
        let mut l = line(&r, Source::Server("http://s".into()), &[]);
        l.reports = false;
        let got = l.render();
        assert!(
            !got.contains("mkimage.api") && !got.contains("token"),
            "{got}"
        );
        assert!(!got.contains("overlayfs"), "{got}");
    }

    #[test]
    fn need_is_the_sum_of_known_sizes_in_mib() {
        let mut r = resolved(vec![art("o.cpio.gz", 'e')]);
        assert_eq!(need_mib(&r), None, "unknown sizes: no word");
        r.basefs.size = Some(90 << 20);
        assert_eq!(need_mib(&r), None, "an overlay's size is unknown");
        r.overlays[0].size = Some(1);
        assert_eq!(need_mib(&r), Some(91));
        let got = line(&r, Source::Media, &[]).render();
        assert!(got.contains(" mkimage.need=91 console="), "{got}");
    }

    #[test]
    fn a_signed_uki_asks_for_signed_node_overlays() {
        let r = resolved(vec![]);
        let mut l = line(&r, Source::Server("http://s:1".into()), &[]);
        l.bootif = None;
        l.token = None;
        l.node_overlay = NodeOverlay::Signed;
        let got = l.render();
        assert!(
            got.starts_with("mkimage.api=http://s:1 mkimage.node-overlay=signed basefs="),
            "{got}"
        );
    }
}
