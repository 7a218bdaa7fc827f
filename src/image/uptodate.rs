//! Whether a build can be skipped: every artifact it makes is in
//! `manifest.json` with the same inputs hash, and the file under that name
//! is the one that was published (the same inode as its content-store
//! object, or, without one, the same sha256). Otherwise the reason, naming
//! the inputs that changed.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::artifact::inputs::Inputs;
use crate::artifact::{objects, Entry, Manifest};

/// What the check found.
#[derive(Debug)]
pub enum Verdict {
    /// Nothing to do: the entries of the artifacts as they are.
    UpToDate(Vec<Entry>),
    /// Build, because of this.
    Stale(String),
}

/// How many changed inputs a message names before `and N more`.
const NAMED: usize = 6;

/// Check the artifacts `files` of a build in `out` against `inputs`.
pub fn check(out: &Path, manifest: &Manifest, files: &[String], inputs: &Inputs) -> Verdict {
    let mut entries = Vec::new();
    for file in files {
        let Some(entry) = manifest.artifacts.get(file) else {
            return Verdict::Stale(format!("{file} was never built here"));
        };
        if entry.inputs_hash != inputs.hash() {
            if entry.inputs.is_empty() {
                return Verdict::Stale(format!("{file} was built without a record of its inputs"));
            }
            let changes = inputs.changes_from(&entry.inputs);
            return Verdict::Stale(if changes.is_empty() {
                format!("the inputs of {file} changed")
            } else {
                name_some(&changes)
            });
        }
        if let Err(why) = published(out, entry) {
            return Verdict::Stale(why);
        }
        entries.push(entry.clone());
    }
    Verdict::UpToDate(entries)
}

fn name_some(changes: &[String]) -> String {
    let mut text = changes
        .iter()
        .take(NAMED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if changes.len() > NAMED {
        text.push_str(&format!(" and {} more", changes.len() - NAMED));
    }
    text
}

/// Is `out/FILE` the file the entry describes?
fn published(out: &Path, entry: &Entry) -> Result<(), String> {
    let path = out.join(&entry.file);
    let Ok(meta) = std::fs::metadata(&path) else {
        return Err(format!("{} is missing", entry.file));
    };
    if meta.len() != entry.size {
        return Err(format!(
            "{} is not the file that was built (size differs)",
            entry.file
        ));
    }
    let object = objects::path(out, &entry.sha256)
        .ok()
        .and_then(|p| std::fs::metadata(p).ok());
    let same_inode = object.is_some_and(|o| o.dev() == meta.dev() && o.ino() == meta.ino());
    if same_inode {
        return Ok(());
    }
    match crate::artifact::sha256_file(&path) {
        Ok((_, sha)) if sha == entry.sha256 => Ok(()),
        _ => Err(format!(
            "{} is not the file that was built (sha256 differs)",
            entry.file
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_only_what_was_published_with_these_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let staged = crate::artifact::staging_file(out, "x.squashfs").unwrap();
        std::fs::write(staged.path(), b"image").unwrap();
        let (_f, path) = staged.keep().unwrap();
        let (size, sha256) = crate::artifact::publish(out, "x.squashfs", &path).unwrap();
        let mut inputs = Inputs::new();
        inputs.add("provisioners/base/tasks.yml", "1");
        let entry = Entry {
            kind: "basefs".into(),
            file: "x.squashfs".into(),
            size,
            sha256,
            inputs_hash: inputs.hash(),
            inputs: inputs.parts().clone(),
            ..Default::default()
        };
        crate::artifact::record(out, &[entry]).unwrap();
        let manifest = Manifest::load(out).unwrap();
        let files = ["x.squashfs".to_string()];
        assert!(
            matches!(check(out, &manifest, &files, &inputs), Verdict::UpToDate(e) if e.len() == 1)
        );

        let mut edited = Inputs::new();
        edited.add("provisioners/base/tasks.yml", "2");
        match check(out, &manifest, &files, &edited) {
            Verdict::Stale(why) => assert_eq!(why, "provisioners/base/tasks.yml changed"),
            v => panic!("{v:?}"),
        }
        // Same size, other bytes, written in place of the published file.
        std::fs::remove_file(out.join("x.squashfs")).unwrap();
        std::fs::write(out.join("x.squashfs"), b"IMAGE").unwrap();
        assert!(
            matches!(check(out, &manifest, &files, &inputs), Verdict::Stale(w) if w.contains("sha256 differs"))
        );
        std::fs::remove_file(out.join("x.squashfs")).unwrap();
        assert!(
            matches!(check(out, &manifest, &files, &inputs), Verdict::Stale(w) if w == "x.squashfs is missing")
        );
        assert!(
            matches!(check(out, &manifest, &["y.cpio.gz".into()], &inputs), Verdict::Stale(w) if w.contains("never built"))
        );
    }
}
