//! Stage archives (osbuild's `--save`/`--from`): a provisioned tree kept as
//! a tar archive, and a basefs build started from one instead of a
//! bootstrap. GNU tar keeps everything a root tree has — owners by number,
//! modes, devices, hard links, ACLs and xattrs (file capabilities) — in
//! sorted order without access or change times, so one tree gives the same
//! archive; the compression follows the name (`.tar`, `.tar.gz`,
//! `.tar.zst`, `.tar.xz`).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::exec::Cmd;
use crate::UsageError;

/// The archive names tar knows how to compress (by `--auto-compress`).
const SUFFIXES: &[&str] = &[".tar", ".tar.gz", ".tgz", ".tar.zst", ".tar.xz"];

/// Refuse a name whose compression tar would not know.
pub fn check_name(file: &Path) -> anyhow::Result<()> {
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    if !SUFFIXES.iter().any(|s| name.ends_with(s)) {
        return Err(UsageError(format!(
            "{}: a stage archive is named FILE{} (the suffix picks the compression)",
            file.display(),
            SUFFIXES.join(", FILE")
        ))
        .into());
    }
    if name.ends_with(".zst") && !crate::exec::have("zstd") {
        return Err(UsageError(format!(
            "{}: .tar.zst needs `zstd`: apt-get install -y zstd",
            file.display()
        ))
        .into());
    }
    Ok(())
}

/// Write the tree at `root` to `file` (a temp file beside it, renamed into
/// place when complete).
pub fn save(root: &Path, file: &Path) -> anyhow::Result<u64> {
    check_name(file)?;
    let dir = file.parent().unwrap_or(Path::new("."));
    let name = file
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let suffix = SUFFIXES
        .iter()
        .filter(|s| name.ends_with(**s))
        .max_by_key(|s| s.len())
        .copied()
        .unwrap_or(".tar");
    let staged = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(&format!(".tmp{suffix}"))
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temp file in {}", dir.display()))?;
    Cmd::new("tar")
        .args([
            "--create",
            "--auto-compress",
            "--numeric-owner",
            "--xattrs",
            "--xattrs-include=*",
            "--acls",
            "--one-file-system",
        ])
        .args([
            "--sort=name",
            "--format=posix",
            "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
        ])
        .arg("--file")
        .arg(staged.path())
        .arg("--directory")
        .arg(root)
        .arg(".")
        .run()
        .with_context(|| format!("cannot archive {} into {}", root.display(), file.display()))?;
    staged
        .persist(file)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot rename into {}", file.display()))?;
    Ok(fs::metadata(file)?.len())
}

/// Unpack the archive `file` into the new dir `dest`.
pub fn extract(file: &Path, dest: &Path) -> anyhow::Result<PathBuf> {
    check_name(file)?;
    fs::create_dir_all(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    Cmd::new("tar")
        .args([
            "--extract",
            "--numeric-owner",
            "--same-permissions",
            "--same-owner",
            "--xattrs",
            "--xattrs-include=*",
            "--acls",
        ])
        .arg("--file")
        .arg(file)
        .arg("--directory")
        .arg(dest)
        .run()
        .with_context(|| format!("cannot unpack the stage archive {}", file.display()))?;
    Ok(dest.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_modes_links_and_is_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/x"), "x").unwrap();
        std::os::unix::fs::symlink("x", root.join("etc/link")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(root.join("etc/x"), fs::Permissions::from_mode(0o4750)).unwrap();
        let a = dir.path().join("a.tar.gz");
        let b = dir.path().join("b.tar.gz");
        save(&root, &a).unwrap();
        save(&root, &b).unwrap();
        assert_eq!(
            crate::artifact::sha256_file(&a).unwrap(),
            crate::artifact::sha256_file(&b).unwrap()
        );
        let out = extract(&a, &dir.path().join("out")).unwrap();
        assert_eq!(fs::read_link(out.join("etc/link")).unwrap(), Path::new("x"));
        assert_eq!(
            fs::metadata(out.join("etc/x"))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777,
            0o4750
        );
        assert!(save(&root, &dir.path().join("a.zip")).is_err());
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
