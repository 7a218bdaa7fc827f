//! The one table of top-level vars-file keys: the loader rejects any other
//! key (with the closest known one as a hint), `--var KEY=VALUE` uses it to
//! tell a top-level key from a role variable, and `mkimage docs` writes
//! docs/reference/config.md's key table from it (a test keeps the two in step).

/// Which image a build makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Basefs,
    Overlay,
    Initrd,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Basefs => "basefs",
            Kind::Overlay => "overlay",
            Kind::Initrd => "initrd",
        }
    }

    /// What a vars file builds, from its keys, when no command says so:
    /// kernel/modules/firmware → initrd; base/parents → overlay; else basefs.
    pub fn infer(has: impl Fn(&str) -> bool) -> Kind {
        if ["kernel", "modules", "firmware", "init_template"]
            .iter()
            .any(|k| has(k))
        {
            Kind::Initrd
        } else if has("base") || has("parents") {
            Kind::Overlay
        } else {
            Kind::Basefs
        }
    }
}

/// One top-level key.
pub struct Key {
    pub name: &'static str,
    /// The builds whose plan uses it (others ignore it, so a shared
    /// `common.yml` can hold keys only some builds use).
    pub kinds: &'static [Kind],
    pub doc: &'static str,
}

const ALL: &[Kind] = &[Kind::Basefs, Kind::Overlay, Kind::Initrd];
const BASEFS: &[Kind] = &[Kind::Basefs];
const OVERLAY: &[Kind] = &[Kind::Overlay];
const INITRD: &[Kind] = &[Kind::Initrd];
const ROLES: &[Kind] = &[Kind::Basefs, Kind::Overlay];
const ON_BASE: &[Kind] = &[Kind::Overlay, Kind::Initrd];
const PACKED: &[Kind] = &[Kind::Overlay, Kind::Initrd];

/// Every top-level key, in the order docs/reference/config.md documents them.
pub const KEYS: &[Key] = &[
    Key {
        name: "name",
        kinds: ALL,
        doc: "build name; names the artifact",
    },
    Key {
        name: "include",
        kinds: ALL,
        doc: "vars file(s) to read first, relative to this one",
    },
    Key {
        name: "suite",
        kinds: ALL,
        doc: "Debian suite (bookworm, trixie)",
    },
    Key {
        name: "variant",
        kinds: BASEFS,
        doc: "bootstrap variant",
    },
    Key {
        name: "arch",
        kinds: ALL,
        doc: "Debian architecture",
    },
    Key {
        name: "components",
        kinds: ALL,
        doc: "archive components",
    },
    Key {
        name: "mirror",
        kinds: ALL,
        doc: "Debian mirror URL",
    },
    Key {
        name: "apt_proxy",
        kinds: ALL,
        doc: "apt proxy for builds, never left in an image",
    },
    Key {
        name: "bootstrapper",
        kinds: BASEFS,
        doc: "auto, mmdebstrap or debootstrap",
    },
    Key {
        name: "packages",
        kinds: BASEFS,
        doc: "extra packages at bootstrap time",
    },
    Key {
        name: "exclude",
        kinds: BASEFS,
        doc: "packages debootstrap leaves out",
    },
    Key {
        name: "provisioners",
        kinds: ROLES,
        doc: "roles to run, in order",
    },
    Key {
        name: "provisioners_dir",
        kinds: ROLES,
        doc: "where roles live",
    },
    Key {
        name: "base",
        kinds: ON_BASE,
        doc: "the basefs to build on",
    },
    Key {
        name: "parents",
        kinds: OVERLAY,
        doc: "parent overlays, applied first",
    },
    Key {
        name: "squashfs",
        kinds: BASEFS,
        doc: "squashfs writer options",
    },
    Key {
        name: "kernel_modules",
        kinds: BASEFS,
        doc: "which kernel modules the basefs keeps",
    },
    Key {
        name: "compression",
        kinds: PACKED,
        doc: "overlay gzip level, initrd format and level",
    },
    Key {
        name: "kernel",
        kinds: INITRD,
        doc: "where the initrd's kernel comes from",
    },
    Key {
        name: "modules",
        kinds: INITRD,
        doc: "kernel modules in the initrd",
    },
    Key {
        name: "firmware",
        kinds: INITRD,
        doc: "include the firmware the modules declare",
    },
    Key {
        name: "init_template",
        kinds: INITRD,
        doc: "the initrd's init template",
    },
    Key {
        name: "cache_dir",
        kinds: ALL,
        doc: "shared caches",
    },
    Key {
        name: "build_dir",
        kinds: ALL,
        doc: "where a build works: `auto` (RAM when there is room), `ram` or `disk`",
    },
    Key {
        name: "bootstrap_cache",
        kinds: BASEFS,
        doc: "reuse bootstrapped trees",
    },
    Key {
        name: "source_date_epoch",
        kinds: ALL,
        doc: "clamp for every mtime in the images",
    },
    Key {
        name: "cleanup",
        kinds: ROLES,
        doc: "extra paths removed before packing",
    },
    Key {
        name: "lock",
        kinds: ALL,
        doc: "lock file pinning every package version (mkimage lock)",
    },
    Key {
        name: "vars",
        kinds: ALL,
        doc: "free-form role variables",
    },
];

/// The key of this name, if it is one.
pub fn get(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

/// The candidate closest to `name` by edit distance, when it is close
/// enough to be a likely typo.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, c)| c)
}

/// ", did you mean `x`?" or nothing.
pub fn hint<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(name, candidates)
        .map(|c| format!(", did you mean `{c}`?"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_their_key() {
        let names = KEYS.iter().map(|k| k.name);
        assert_eq!(closest("packges", names.clone()), Some("packages"));
        assert_eq!(closest("provisioner", names.clone()), Some("provisioners"));
        assert_eq!(closest("zzzzzz", names), None);
    }

    /// docs/reference/config.md has a section for exactly these keys (its
    /// table is generated: `mkimage docs`).
    #[test]
    fn the_config_reference_documents_every_key() {
        let page = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/reference/config.md"
        ))
        .unwrap();
        for key in KEYS {
            assert!(
                page.contains(&format!("### `{}`", key.name)),
                "docs/reference/config.md has no section for `{}`",
                key.name
            );
        }
        for line in page.lines().filter_map(|l| l.strip_prefix("### `")) {
            let name = line.trim_end_matches('`');
            assert!(
                get(name).is_some(),
                "docs/reference/config.md documents `{name}`, which is not a key"
            );
        }
    }
}
