//! The boot stages a machine goes through, in order, and which of them
//! machines report themselves.

use serde::{Deserialize, Serialize};

/// A boot stage, in the order a boot goes through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Its iPXE script was served.
    Script,
    /// It fetched its kernel, then its initrd (seen by the server).
    Kernel,
    Initrd,
    /// The init's steps: an address, downloads started, images verified,
    /// the union root mounted, switch_root next.
    Network,
    Download,
    Verified,
    Mounted,
    SwitchRoot,
    /// The booted system's unit (base role) reported in.
    Booted,
    /// The discovery overlay posted its inventory.
    Inventory,
    /// The init reported a failure (the record keeps the reason).
    Failed,
}

impl Stage {
    pub const ALL: [Stage; 11] = [
        Stage::Script,
        Stage::Kernel,
        Stage::Initrd,
        Stage::Network,
        Stage::Download,
        Stage::Verified,
        Stage::Mounted,
        Stage::SwitchRoot,
        Stage::Booted,
        Stage::Inventory,
        Stage::Failed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Script => "script",
            Stage::Kernel => "kernel",
            Stage::Initrd => "initrd",
            Stage::Network => "network",
            Stage::Download => "download",
            Stage::Verified => "verified",
            Stage::Mounted => "mounted",
            Stage::SwitchRoot => "switch-root",
            Stage::Booted => "booted",
            Stage::Inventory => "inventory",
            Stage::Failed => "failed",
        }
    }

    /// The stages a machine reports itself with `GET …/event?stage=NAME`
    /// (the server sees the others happen).
    pub fn reported(name: &str) -> Option<Stage> {
        Stage::ALL
            .into_iter()
            .filter(|s| {
                !matches!(
                    s,
                    Stage::Script | Stage::Kernel | Stage::Initrd | Stage::Inventory
                )
            })
            .find(|s| s.name() == name)
    }

    /// The names `reported` accepts, for error messages.
    pub fn reported_names() -> String {
        Stage::ALL
            .into_iter()
            .filter_map(|s| Stage::reported(s.name()))
            .map(Stage::name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_names_round_trip_and_only_reported_ones_are_accepted() {
        for s in Stage::ALL {
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.name())
            );
        }
        assert_eq!(Stage::reported("switch-root"), Some(Stage::SwitchRoot));
        assert_eq!(Stage::reported("booted"), Some(Stage::Booted));
        assert_eq!(
            Stage::reported("kernel"),
            None,
            "the server sees the kernel fetched itself"
        );
        assert_eq!(Stage::reported("bogus"), None);
        assert_eq!(
            Stage::reported_names(),
            "network, download, verified, mounted, switch-root, booted, failed"
        );
    }
}
