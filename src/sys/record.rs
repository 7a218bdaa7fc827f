//! A [`Sys`] that changes nothing: it records every call and keeps its own
//! mount table, so a mount plan can be asserted call by call without root.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::mount::MsFlags;
use nix::sched::CloneFlags;

use super::calls::Sys;

/// One recorded call.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Mount {
        source: PathBuf,
        target: PathBuf,
        fstype: Option<String>,
        flags: MsFlags,
        data: Option<String>,
    },
    MountImage {
        image: PathBuf,
        target: PathBuf,
        fstype: String,
    },
    Umount {
        target: PathBuf,
        detach: bool,
    },
    Unshare(CloneFlags),
}

impl Call {
    /// A short form for assertions: `mount proc /x/proc`, `bind /sys /x/sys`,
    /// `remount-ro /x/sys`, `image squashfs base.sqfs /x/base`, `umount /x/proc`.
    pub fn short(&self, strip: &Path) -> String {
        let rel = |p: &Path| {
            p.strip_prefix(strip)
                .map(|r| format!("/{}", r.display()))
                .unwrap_or_else(|_| p.display().to_string())
        };
        match self {
            Call::Mount { flags, target, .. } if flags.contains(MsFlags::MS_REMOUNT) => {
                format!("remount-ro {}", rel(target))
            }
            Call::Mount {
                source,
                target,
                fstype: None,
                ..
            } => format!("bind {} {}", rel(source), rel(target)),
            Call::Mount {
                target,
                fstype: Some(t),
                data,
                ..
            } => {
                format!(
                    "mount {t} {}{}",
                    rel(target),
                    data.as_deref().map(|d| format!(" {d}")).unwrap_or_default()
                )
            }
            Call::MountImage {
                image,
                target,
                fstype,
            } => format!("image {fstype} {} {}", rel(image), rel(target)),
            Call::Umount { target, .. } => format!("umount {}", rel(target)),
            Call::Unshare(flags) => format!("unshare {flags:?}"),
        }
    }
}

/// Records calls; mounts go into its own table, unmounts take them out.
#[derive(Default)]
pub struct Recorder {
    calls: Mutex<Vec<Call>>,
    table: Mutex<Vec<PathBuf>>,
}

impl Recorder {
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Every call in its short form, paths relative to `strip`.
    pub fn plan(&self, strip: &Path) -> Vec<String> {
        self.calls().iter().map(|c| c.short(strip)).collect()
    }

    fn push(&self, call: Call) {
        if let Ok(mut c) = self.calls.lock() {
            c.push(call);
        }
    }

    fn mounted(&self, target: &Path) {
        if let Ok(mut t) = self.table.lock() {
            t.push(target.to_path_buf());
        }
    }
}

impl Sys for Recorder {
    fn mount(
        &self,
        source: &Path,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> anyhow::Result<()> {
        self.push(Call::Mount {
            source: source.to_path_buf(),
            target: target.to_path_buf(),
            fstype: fstype.map(str::to_string),
            flags,
            data: data.map(str::to_string),
        });
        if !flags.contains(MsFlags::MS_REMOUNT) {
            self.mounted(target);
        }
        Ok(())
    }

    fn mount_image(&self, image: &Path, target: &Path, fstype: &str) -> anyhow::Result<()> {
        self.push(Call::MountImage {
            image: image.to_path_buf(),
            target: target.to_path_buf(),
            fstype: fstype.to_string(),
        });
        self.mounted(target);
        Ok(())
    }

    fn umount(&self, target: &Path, detach: bool) -> anyhow::Result<()> {
        self.push(Call::Umount {
            target: target.to_path_buf(),
            detach,
        });
        if let Ok(mut t) = self.table.lock() {
            if let Some(i) = t.iter().rposition(|p| p == target) {
                t.remove(i);
            }
        }
        Ok(())
    }

    fn unshare(&self, flags: CloneFlags) -> anyhow::Result<()> {
        self.push(Call::Unshare(flags));
        Ok(())
    }

    fn mounts_under(&self, dir: &Path) -> Vec<PathBuf> {
        let table = self.table.lock().map(|t| t.clone()).unwrap_or_default();
        super::calls::deepest_first(table.into_iter().filter(|p| p.starts_with(dir)).collect())
    }
}
