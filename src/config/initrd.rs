//! The initrd settings a plan carries: how its cpio is compressed, the
//! init's defaults, and where its firmware comes from.

/// How the initrd's cpio is compressed (the kernel unpacks both).
#[derive(Debug, Clone, PartialEq)]
pub enum Compression {
    Gzip { level: u32 },
    Zstd { level: i32 },
}

/// The init's defaults for what the kernel command line can override.
#[derive(Debug, Clone, PartialEq)]
pub struct InitDefaults {
    /// `mkimage.onfail=`: `shell` or `reboot`.
    pub onfail: String,
    /// `mkimage.retries=`: download attempts per file.
    pub retries: u32,
    /// `mkimage.backoff=`: seconds before the first retry (doubling).
    pub backoff: u32,
    /// `rootsize=`: tmpfs size for the writable layer.
    pub rootsize: String,
}

impl Default for InitDefaults {
    fn default() -> Self {
        InitDefaults {
            onfail: "shell".into(),
            retries: 5,
            backoff: 2,
            rootsize: "50%".into(),
        }
    }
}

/// Where the firmware comes from (`firmware:` of an initrd build).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirmwareSource {
    /// None at all.
    None,
    /// Only what the basefs has; the rest is a warning.
    Basefs,
    /// The basefs, then Debian's non-free-firmware packages.
    Debian,
}
