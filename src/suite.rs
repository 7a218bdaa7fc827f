//! The Debian releases mkimage builds and boot-tests, in one table.
//!
//! A suite not in it would fail late — inside the bootstrapper, after the
//! config was read and the work dir made — or, worse, build an image nobody
//! has netbooted. So the config loader (and with it `mkimage check`) refuses
//! it up front, naming the place and the suites that work; the README lists
//! the same table.

/// A Debian release mkimage supports (CI builds and netboots each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suite {
    /// What `suite:` says (and the bootstrapper and apt use).
    pub codename: &'static str,
    /// Debian's release number.
    pub version: u32,
    /// Whether mmdebstrap should merge /usr with its `merged-usr` hook
    /// (directory links, as debootstrap makes them). Bookworm's
    /// init-system-helpers needs `usrmerge | usr-is-merged`, and apt picks
    /// usrmerge, which converts the tree and pulls in perl: two packages
    /// unpacked, configured and then purged again by the base role.
    /// Trixie's tree is merged by its own packages.
    pub merged_usr_hook: bool,
}

/// Every supported suite, oldest first.
pub const SUPPORTED: &[Suite] = &[
    Suite {
        codename: "bookworm",
        version: 12,
        merged_usr_hook: true,
    },
    Suite {
        codename: "trixie",
        version: 13,
        merged_usr_hook: false,
    },
];

/// The supported suite named `codename`.
pub fn lookup(codename: &str) -> Option<Suite> {
    SUPPORTED.iter().copied().find(|s| s.codename == codename)
}

/// Why `codename` cannot be built, with the fix; `None` when it can.
pub fn unsupported(codename: &str) -> Option<String> {
    if lookup(codename).is_some() {
        return None;
    }
    let list: Vec<String> = SUPPORTED
        .iter()
        .map(|s| format!("{} (Debian {})", s.codename, s.version))
        .collect();
    let moving = matches!(codename, "stable" | "oldstable")
        || SUPPORTED.iter().any(|s| s.version.to_string() == codename);
    let hint = if moving {
        " — name the release by its codename, which does not move"
    } else {
        ""
    };
    Some(format!(
        "`{codename}` is not a suite mkimage supports{hint}; use one of {} (e.g. `suite: trixie` in vars/common.yml, or `--var suite=trixie`)",
        list.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_bookworm_and_trixie() {
        assert_eq!(lookup("trixie").map(|s| s.version), Some(13));
        assert_eq!(lookup("bookworm").map(|s| s.version), Some(12));
        assert_eq!(unsupported("trixie"), None);
    }

    #[test]
    fn refuses_typos_and_moving_names_with_the_fix() {
        let err = unsupported("trixy").unwrap();
        assert!(
            err.contains("`trixy`")
                && err.contains("bookworm (Debian 12), trixie (Debian 13)")
                && err.contains("--var suite=trixie"),
            "{err}"
        );
        assert!(unsupported("stable").unwrap().contains("codename"));
        assert!(unsupported("13").unwrap().contains("codename"));
        assert!(!unsupported("sid").unwrap().contains("codename"));
    }
}
