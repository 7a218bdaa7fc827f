//! `keyctl` for the initrd: the init of a signed UKI checks its node
//! overlay's signature with it, by the kernel's own RSA
//! (`keyctl padd asymmetric` of the certificate the UKI carries, then
//! `keyctl pkey_verify`; Debian's kernels build the asymmetric key type and
//! the X.509 parser in). Busybox has nothing that verifies a signature.
//! From Debian's `keyutils` and `libkeyutils1` (about 80 KB), through the
//! configured mirror and cache, like dmsetup.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::apt::Fetcher;

/// The packages: the tool, and the libraries of its closure (bookworm and trixie).
pub const PACKAGES: &[&str] = &["keyutils", "libkeyutils1", "libc6"];

/// Where the init finds it (on its PATH).
pub const BINARY: &str = "bin/keyctl";

/// keyctl and the files it needs, by initrd path.
pub struct KeyUtils {
    pub files: BTreeMap<String, PathBuf>,
    pub versions: BTreeMap<String, String>,
}

pub fn fetch(fetcher: &Fetcher) -> anyhow::Result<KeyUtils> {
    let (files, versions) =
        super::dmsetup::fetch_tool(fetcher, PACKAGES, BINARY, &["bin/keyctl", "usr/bin/keyctl"])?;
    Ok(KeyUtils { files, versions })
}
