//! What never ships in an image, in one table that the basefs cleanup and
//! the overlay packing both use: on-imagebuilder's clean_fs list (apt lists
//! and caches, docs, man pages, locales, logs) plus everything that would
//! give every netbooted machine the same identity or leak the build host
//! (SSH host keys, machine-ids, resolv.conf, proxy config, random seeds,
//! the build's own apt and policy-rc.d files).

/// Removed from every image (globs relative to the tree's root).
pub const NEVER_SHIP: &[&str] = &[
    "var/lib/apt/lists/*",
    "var/cache/apt/*.bin",
    "var/cache/apt/archives/*.deb",
    "var/cache/apt/archives/partial/*",
    "var/cache/apt/archives/lock",
    "var/cache/debconf/*-old",
    "var/lib/dpkg/*-old",
    "var/cache/man/*",
    "var/cache/ldconfig/aux-cache",
    "usr/share/doc/*",
    "usr/share/man/*",
    "usr/share/info/*",
    "usr/share/lintian/*",
    "usr/share/locale/*",
    "tmp/*",
    "var/tmp/*",
    "root/.bash_history",
    "root/.cache",
    "etc/ssh/ssh_host_*",
    "var/lib/systemd/random-seed",
    "var/lib/dbus/machine-id",
    "etc/resolv.conf",
    "etc/apt/apt.conf.d/*proxy*",
    "etc/apt/apt.conf.d/00mkimage-build",
    // mmdebstrap keeps every --aptopt (our cache and proxy settings) here.
    "etc/apt/apt.conf.d/99mmdebstrap",
    "etc/dpkg/dpkg.cfg.d/99mmdebstrap",
    "usr/sbin/policy-rc.d",
    // A lock file's pins and local repository, while building.
    "etc/apt/preferences.d/mkimage-lock.pref",
    "etc/apt/sources.list.d/mkimage-lock.list",
    "etc/hostname.mkimage-build",
];

/// Files of these dirs are removed (the directories stay, packages expect them).
pub const EMPTY_FILES_UNDER: &[&str] = &["var/log"];

/// Emptied, not removed: an empty `/etc/machine-id` makes systemd generate
/// one per boot.
pub const EMPTIED: &[&str] = &["etc/machine-id"];
