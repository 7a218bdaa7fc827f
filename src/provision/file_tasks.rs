//! The file modules: `copy`, `template`, `file`, `lineinfile`. They work on
//! the tree from outside the chroot, resolving paths as the chroot would.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::paths::resolve;
use super::role::{Role, Run};
use super::task::{Copy, File, FileState, LineInFile, Mode, Presence};

/// The role's source file for `copy` (files/) or `template` (templates/).
pub(super) fn source(role: &Role, sub: &str, src: &str) -> anyhow::Result<PathBuf> {
    if src.starts_with('/') || src.split('/').any(|c| c == "..") {
        bail!("src `{src}` must be a relative path inside the role's {sub}/ directory");
    }
    let path = role.dir.join(sub).join(src);
    if !path.exists() {
        bail!(
            "src `{src}`: no such file {} (put it in the role's {sub}/ directory)",
            path.display()
        );
    }
    Ok(path)
}

/// Host path of a destination; a trailing `/` or an existing directory
/// means "into that directory, under the source's name".
fn dest_path(run: &Run, dest: &str, src: &Path) -> anyhow::Result<PathBuf> {
    let mut path = resolve(run.root, dest, true).map_err(anyhow::Error::msg)?;
    if dest.ends_with('/') || (path.is_dir() && !src.is_dir()) {
        path = path.join(src.file_name().unwrap_or_default());
    }
    Ok(path)
}

pub fn copy(run: &Run, c: &Copy) -> anyhow::Result<()> {
    let src = source(run.role, "files", &c.src)?;
    if run.dry {
        return Ok(());
    }
    let dest = dest_path(run, &c.dest, &src)?;
    copy_tree(&src, &dest)?;
    set_attrs(
        run,
        &dest,
        c.mode.as_ref(),
        c.owner.as_deref(),
        c.group.as_deref(),
    )
}

fn copy_tree(src: &Path, dest: &Path) -> anyhow::Result<()> {
    let meta = fs::symlink_metadata(src)?;
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)?;
    }
    if meta.is_dir() {
        fs::create_dir_all(dest)?;
        fs::set_permissions(dest, meta.permissions())?;
        let mut names: Vec<_> = fs::read_dir(src)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        names.sort();
        for name in names {
            copy_tree(&src.join(&name), &dest.join(&name))?;
        }
    } else if meta.file_type().is_symlink() {
        let _ = fs::remove_file(dest);
        std::os::unix::fs::symlink(fs::read_link(src)?, dest)?;
    } else {
        let _ = fs::remove_file(dest); // replace a link instead of writing through it
        fs::copy(src, dest).with_context(|| format!("cannot copy to {}", dest.display()))?;
    }
    Ok(())
}

/// A `template` task's source and what it renders to with `ctx`.
pub(super) fn render_template(
    role: &Role,
    t: &crate::template::Templater,
    c: &Copy,
    ctx: &minijinja::Value,
) -> anyhow::Result<(PathBuf, String)> {
    let src = source(role, "templates", &c.src)?;
    let text =
        fs::read_to_string(&src).with_context(|| format!("cannot read {}", src.display()))?;
    let out = t
        .render(&text, ctx)
        .map_err(|e| anyhow::anyhow!("template {}: {}", src.display(), e.detail))?;
    Ok((src, out))
}

pub fn template(run: &Run, c: &Copy) -> anyhow::Result<()> {
    let (src, out) = render_template(run.role, run.templater, c, &run.ctx)?;
    if run.dry {
        return Ok(());
    }
    let dest = dest_path(run, &c.dest, &src)?;
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)?;
    }
    let _ = fs::remove_file(&dest);
    fs::write(&dest, out).with_context(|| format!("cannot write {}", c.dest))?;
    if c.mode.is_none() {
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o644))?;
    }
    set_attrs(
        run,
        &dest,
        c.mode.as_ref(),
        c.owner.as_deref(),
        c.group.as_deref(),
    )
}

pub fn file(run: &Run, f: &File) -> anyhow::Result<()> {
    if let Some(m) = &f.mode {
        m.bits().map_err(anyhow::Error::msg)?;
    }
    if f.state == FileState::Link && f.src.is_none() {
        bail!("state: link needs `src:` (the link target)");
    }
    if run.dry {
        return Ok(());
    }
    let path = resolve(
        run.root,
        &f.path,
        f.state != FileState::Link && f.state != FileState::Absent,
    )
    .map_err(anyhow::Error::msg)?;
    match f.state {
        FileState::Directory => {
            fs::create_dir_all(&path).with_context(|| format!("cannot create {}", f.path))?
        }
        FileState::Touch => {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("cannot touch {}", f.path))?;
        }
        FileState::Link => {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            if fs::symlink_metadata(&path).is_ok_and(|m| !m.is_dir()) {
                fs::remove_file(&path)?;
            }
            std::os::unix::fs::symlink(f.src.as_deref().unwrap_or_default(), &path)
                .with_context(|| format!("cannot create link {}", f.path))?;
            return Ok(());
        }
        FileState::Absent => {
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => crate::sys::remove_tree(run.sys, &path)?,
                Ok(_) => fs::remove_file(&path)?,
                Err(_) => {}
            }
            return Ok(());
        }
        FileState::File => {
            if !path.exists() {
                bail!(
                    "{} does not exist (use state: touch or directory to create it)",
                    f.path
                );
            }
        }
    }
    set_attrs(
        run,
        &path,
        f.mode.as_ref(),
        f.owner.as_deref(),
        f.group.as_deref(),
    )
}

pub fn lineinfile(run: &Run, l: &LineInFile) -> anyhow::Result<()> {
    let re = l
        .regexp
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .map_err(|e| anyhow::anyhow!("regexp: {e}"))?;
    if l.state == Presence::Present && l.line.is_none() {
        bail!("state: present needs `line:`");
    }
    if l.state == Presence::Absent && l.line.is_none() && re.is_none() {
        bail!("state: absent needs `line:` or `regexp:`");
    }
    if run.dry {
        return Ok(());
    }
    let path = resolve(run.root, &l.path, true).map_err(anyhow::Error::msg)?;
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && l.create.unwrap_or(true) => {
            String::new()
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", l.path)),
    };
    let matches = |line: &str| match &re {
        Some(re) => re.is_match(line),
        None => Some(line) == l.line.as_deref(),
    };
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    match l.state {
        Presence::Present => {
            let want = l.line.clone().unwrap_or_default();
            match lines.iter().rposition(|x| matches(x)) {
                Some(i) => lines[i] = want,
                None if !lines.contains(&want) => lines.push(want),
                None => {}
            }
        }
        Presence::Absent => lines.retain(|x| !matches(x)),
    }
    let mut out = lines.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    if out != text || !path.exists() {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&path, out).with_context(|| format!("cannot write {}", l.path))?;
    }
    set_attrs(run, &path, l.mode.as_ref(), None, None)
}

/// Apply mode and owner/group (names resolved in the tree's passwd/group).
fn set_attrs(
    run: &Run,
    path: &Path,
    mode: Option<&Mode>,
    owner: Option<&str>,
    group: Option<&str>,
) -> anyhow::Result<()> {
    if let Some(m) = mode {
        let bits = m.bits().map_err(anyhow::Error::msg)?;
        fs::set_permissions(path, fs::Permissions::from_mode(bits))?;
    }
    let uid = owner
        .map(|o| lookup(run.root, "etc/passwd", o))
        .transpose()?;
    let gid = group
        .map(|g| lookup(run.root, "etc/group", g))
        .transpose()?;
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::lchown(path, uid, gid)
            .with_context(|| format!("cannot chown {}", path.display()))?;
    }
    Ok(())
}

/// A user or group id by name (or number) from the tree's database.
pub fn lookup(root: &Path, db: &str, name: &str) -> anyhow::Result<u32> {
    if let Ok(n) = name.parse() {
        return Ok(n);
    }
    let text = fs::read_to_string(root.join(db)).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            Some((f.next()?, f.nth(1)?))
        })
        .find(|(n, _)| *n == name)
        .and_then(|(_, id)| id.parse().ok())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no {} `{name}` in the image's /{db} (create it first with a `user:` task)",
                if db.ends_with("group") {
                    "group"
                } else {
                    "user"
                }
            )
        })
}
