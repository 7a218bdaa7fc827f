//! busybox for the initrd: Debian's `busybox-static`, fetched through the
//! configured mirror and cache (never copied from the build host), with its
//! applet symlinks made at build time from `busybox --list-full`.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::apt::Fetcher;
use crate::exec::Cmd;

/// The Debian package that provides a static busybox.
pub const PACKAGE: &str = "busybox-static";

/// A busybox binary and where its applets go.
pub struct Busybox {
    pub binary: PathBuf,
    /// Package version (for the manifest).
    pub version: String,
    /// Applet paths relative to `/`, e.g. `bin/sh`, `sbin/insmod`.
    pub applets: Vec<String>,
}

/// Fetch (or find in the cache) busybox-static and list its applets.
pub fn fetch(fetcher: &Fetcher) -> anyhow::Result<Busybox> {
    let pkg = fetcher.resolve(PACKAGE)?;
    let tree = fetcher.unpacked(&pkg)?;
    let Some(binary) = binary_in(&tree) else {
        anyhow::bail!(
            "{} {} has no {} ({})",
            pkg.name,
            pkg.version,
            LOCATIONS.join(" or "),
            tree.display()
        );
    };
    let applets = applets(&binary)?;
    Ok(Busybox {
        binary,
        version: pkg.version,
        applets,
    })
}

/// Where the package puts the binary: `bin/` up to bookworm, `usr/bin/`
/// from trixie on (the /usr-merge moved it).
const LOCATIONS: &[&str] = &["bin/busybox", "usr/bin/busybox"];

fn binary_in(tree: &Path) -> Option<PathBuf> {
    LOCATIONS.iter().map(|l| tree.join(l)).find(|p| p.is_file())
}

/// `busybox --list-full`, minus busybox itself, sorted.
pub fn applets(binary: &Path) -> anyhow::Result<Vec<String>> {
    let out = Cmd::new(binary)
        .arg("--list-full")
        .run()
        .with_context(|| format!("cannot list the applets of {}", binary.display()))?;
    let mut list = parse_list(&out.stdout);
    if !list.iter().any(|a| a == "bin/sh") {
        anyhow::bail!(
            "{} has no `sh` applet; the init needs one",
            binary.display()
        );
    }
    list.sort();
    Ok(list)
}

fn parse_list(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.trim().trim_start_matches('/').to_string())
        .filter(|l| !l.is_empty() && !l.contains("..") && l != "bin/busybox" && !l.ends_with('/'))
        .collect()
}

/// The symlink target from an applet path to `/bin/busybox` (relative, so
/// the tree works wherever it is mounted).
pub fn link_target(applet: &str) -> String {
    let depth = applet.matches('/').count();
    format!("{}bin/busybox", "../".repeat(depth))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_and_links() {
        let list = parse_list("bin/sh\nbin/busybox\nusr/sbin/udhcpd\n/sbin/insmod\n\n../etc/x\n");
        assert_eq!(list, ["bin/sh", "usr/sbin/udhcpd", "sbin/insmod"]);
        assert_eq!(link_target("bin/sh"), "../bin/busybox");
        assert_eq!(link_target("usr/sbin/udhcpd"), "../../bin/busybox");
    }

    #[test]
    fn finds_the_binary_before_and_after_the_usr_merge() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(binary_in(dir.path()), None);
        std::fs::create_dir_all(dir.path().join("usr/bin")).unwrap();
        std::fs::write(dir.path().join("usr/bin/busybox"), b"").unwrap();
        assert_eq!(
            binary_in(dir.path()),
            Some(dir.path().join("usr/bin/busybox"))
        );
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        std::fs::write(dir.path().join("bin/busybox"), b"").unwrap();
        assert_eq!(binary_in(dir.path()), Some(dir.path().join("bin/busybox")));
    }
}
