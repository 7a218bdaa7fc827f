//! Finding a build's inputs in the output dir: the basefs an overlay or
//! initrd names (`base:`), parent overlays, by build name from
//! `manifest.json` or by file; each with the content hash later steps record.

use std::fs;
use std::path::{Path, PathBuf};

use super::{Entry, Manifest, Ref};
use crate::UsageError;

/// An input found in the output dir: its file and content hash.
#[derive(Debug, Clone)]
pub struct Input {
    pub path: PathBuf,
    pub entry: Option<Entry>,
}

impl Input {
    pub fn reference(&self) -> anyhow::Result<Ref> {
        let file = self
            .path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let sha256 = match &self.entry {
            Some(e) => e.sha256.clone(),
            None => super::sha256_file(&self.path)?.1,
        };
        Ok(Ref { file, sha256 })
    }
}

/// Find the basefs a build names (`base:`: a build name from the manifest, or
/// a file), or the only basefs of the output dir when none is named.
/// `file` is the vars file that names it (for messages).
pub fn find_base(
    base: Option<&str>,
    file: &Path,
    out: &Path,
    manifest: &Manifest,
) -> anyhow::Result<Input> {
    let input = match base {
        Some(base) => find(out, manifest, "basefs", base, &format!("{base}.squashfs"))?,
        None => {
            let all: Vec<&Entry> = manifest
                .artifacts
                .values()
                .filter(|e| e.kind == "basefs")
                .collect();
            match all.as_slice() {
                [one] => Input { path: out.join(&one.file), entry: Some((*one).clone()) },
                [] => {
                    return Err(UsageError(format!(
                        "{}: no basefs in {}: build one first (mkimage basefs --vars vars/basefs.yml --out {}) or set `base:`",
                        file.display(),
                        out.display(),
                        out.display()
                    ))
                    .into())
                }
                _ => return Err(UsageError(format!("{}: {} holds several basefs builds: set `base:` to one of them", file.display(), out.display())).into()),
            }
        }
    };
    let mut magic = [0u8; 4];
    let read =
        fs::File::open(&input.path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic));
    if read.is_err() || &magic != b"hsqs" {
        return Err(UsageError(format!(
            "{}: not a squashfs image (rebuild it with mkimage basefs)",
            input.path.display()
        ))
        .into());
    }
    Ok(input)
}

/// A named input: a manifest build name of `kind`, else a file in `out` or a path.
pub fn find(
    out: &Path,
    manifest: &Manifest,
    kind: &str,
    name: &str,
    default_file: &str,
) -> anyhow::Result<Input> {
    if let Some(e) = manifest.find(kind, name) {
        let path = out.join(&e.file);
        if path.is_file() {
            return Ok(Input {
                path,
                entry: Some(e.clone()),
            });
        }
    }
    for candidate in [out.join(name), PathBuf::from(name), out.join(default_file)] {
        if candidate.is_file() {
            let file = candidate
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            let entry = manifest.artifacts.get(&file).cloned();
            return Ok(Input {
                path: candidate,
                entry,
            });
        }
    }
    Err(UsageError(format!(
        "{kind} `{name}` not found in {} (build it first with `mkimage {} --vars vars/{name}.yml --out {}`)",
        out.display(),
        if kind == "basefs" { "basefs" } else { "overlay" },
        out.display()
    ))
    .into())
}
