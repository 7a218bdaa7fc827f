//! The one deterministic tree walk (sorted bytewise, symlinks not followed)
//! that both archive writers, the xattr scan and cleanup use, and the one
//! glob matcher: shell-style patterns per path component, for exclude lists,
//! cleanup and extraction patterns.

use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// One item of a tree walk.
#[derive(Debug)]
pub struct WalkItem {
    /// Path relative to the root, `/`-separated, empty for the root itself.
    pub rel: PathBuf,
    pub abs: PathBuf,
    pub meta: Metadata,
}

impl WalkItem {
    /// `rel`, with the root shown as `.`.
    pub fn rel_path(&self) -> PathBuf {
        if self.rel.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            self.rel.clone()
        }
    }
}

/// Every entry under `root` (root first), depth-first with the names of each
/// directory sorted bytewise; symlinks are not followed.
pub fn walk(root: &Path) -> io::Result<Vec<WalkItem>> {
    walk_filtered(root, &|_| false)
}

/// Like [`walk`], leaving out (and not descending into) paths for which
/// `skip(rel)` is true.
pub fn walk_filtered(root: &Path, skip: &dyn Fn(&Path) -> bool) -> io::Result<Vec<WalkItem>> {
    let meta = fs::symlink_metadata(root).map_err(|e| with_path(root, e))?;
    let mut out = Vec::new();
    let is_dir = meta.is_dir();
    out.push(WalkItem {
        rel: PathBuf::new(),
        abs: root.to_path_buf(),
        meta,
    });
    if is_dir {
        walk_dir(root, Path::new(""), skip, &mut out)?;
    }
    Ok(out)
}

fn walk_dir(
    abs: &Path,
    rel: &Path,
    skip: &dyn Fn(&Path) -> bool,
    out: &mut Vec<WalkItem>,
) -> io::Result<()> {
    let mut names: Vec<_> = fs::read_dir(abs)
        .map_err(|e| with_path(abs, e))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(|e| with_path(abs, e))?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        let child_rel = rel.join(&name);
        if skip(&child_rel) {
            continue;
        }
        let child_abs = abs.join(&name);
        let meta = fs::symlink_metadata(&child_abs).map_err(|e| with_path(&child_abs, e))?;
        let is_dir = meta.is_dir();
        out.push(WalkItem {
            rel: child_rel.clone(),
            abs: child_abs.clone(),
            meta,
        });
        if is_dir {
            walk_dir(&child_abs, &child_rel, skip, out)?;
        }
    }
    Ok(())
}

fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Shell-style match of one path component: `*` (any run), `?` (one
/// character), `[abc]`/`[a-z]`/`[!a]` (a class); everything else literal.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative matcher with backtracking to the last `*`.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ni));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                '[' => {
                    if let Some((matched, next)) = class_match(&p, pi, n[ni]) {
                        if matched {
                            pi = next;
                            ni += 1;
                            continue;
                        }
                    } else if n[ni] == '[' {
                        pi += 1;
                        ni += 1;
                        continue;
                    }
                }
                c if c == n[ni] => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, sn)) => {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Match `c` against the class starting at `p[start] == '['`: Some((matched,
/// index after `]`)), or None if the class is not closed (then `[` is literal).
fn class_match(p: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = i < p.len() && (p[i] == '!' || p[i] == '^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < p.len() && (p[i] != ']' || first) {
        first = false;
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            matched |= p[i] <= c && c <= p[i + 2];
            i += 3;
        } else {
            matched |= p[i] == c;
            i += 1;
        }
    }
    (i < p.len()).then_some((matched != negate, i + 1))
}

/// Does a `/`-separated pattern (each component a glob) match `path` or one
/// of its ancestors? `var/log/*` matches `var/log/apt/x` but not `var/log`.
pub fn path_pattern_matches(pattern: &str, path: &str) -> bool {
    let pat: Vec<&str> = pattern
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    let comps: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    !pat.is_empty()
        && comps.len() >= pat.len()
        && pat.iter().zip(&comps).all(|(p, c)| glob_match(p, c))
}

/// Paths under `root` matching a relative glob (each component a
/// `glob_match` pattern), sorted. Only real directories are descended into:
/// a symlink inside the tree never leads the match out of it (cleanup
/// removes what this returns).
pub fn expand(root: &Path, pattern: &str) -> Vec<PathBuf> {
    let is_real_dir = |p: &Path| fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
    let mut current = vec![root.to_path_buf()];
    for part in pattern.split('/').filter(|p| !p.is_empty()) {
        let mut next = Vec::new();
        for dir in current.iter().filter(|d| is_real_dir(d)) {
            if part.contains(['*', '?', '[']) {
                let Ok(entries) = fs::read_dir(dir) else {
                    continue;
                };
                let mut names: Vec<_> = entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect();
                names.sort();
                next.extend(
                    names
                        .into_iter()
                        .filter(|n| glob_match(part, n))
                        .map(|n| dir.join(n)),
                );
            } else {
                let p = dir.join(part);
                if fs::symlink_metadata(&p).is_ok() {
                    next.push(p);
                }
            }
        }
        current = next;
    }
    current.retain(|p| p != root);
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*proxy*", "01proxy"));
        assert!(glob_match("vmlinuz-*", "vmlinuz-6.1.0-18-amd64"));
        assert!(!glob_match("vmlinuz-*", "initrd.img"));
        assert!(glob_match("a?c", "abc"));
        assert!(glob_match("[a-c]x", "bx"));
        assert!(!glob_match("[!a-c]x", "bx"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("a", "ab"));
        assert!(glob_match("a*b*c", "aXbYbZc"));
        assert!(glob_match("[x", "[x"));
    }

    #[test]
    fn path_patterns() {
        assert!(path_pattern_matches("var/log/*", "var/log/apt/history.log"));
        assert!(!path_pattern_matches("var/log/*", "var/log"));
        assert!(path_pattern_matches("tmp", "tmp/x"));
        assert!(path_pattern_matches("/etc/resolv.conf", "etc/resolv.conf"));
        assert!(!path_pattern_matches(
            "etc/resolv.conf",
            "etc/resolv.conf.d"
        ));
        assert!(path_pattern_matches(
            "etc/apt/apt.conf.d/*proxy*",
            "etc/apt/apt.conf.d/01proxy"
        ));
    }

    #[test]
    fn expand_follows_no_symlinks_and_sorts() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for f in [
            "etc/apt/apt.conf.d/01proxy",
            "etc/apt/apt.conf.d/99x",
            "etc/apt/apt.conf.d/00proxy",
        ] {
            fs::create_dir_all(r.join(f).parent().unwrap()).unwrap();
            fs::write(r.join(f), b"x").unwrap();
        }
        std::os::unix::fs::symlink("/etc", r.join("hostetc")).unwrap();
        let got = expand(r, "etc/apt/apt.conf.d/*proxy*");
        assert_eq!(
            got,
            [
                r.join("etc/apt/apt.conf.d/00proxy"),
                r.join("etc/apt/apt.conf.d/01proxy")
            ]
        );
        assert!(
            expand(r, "hostetc/*").is_empty(),
            "must not walk through a symlink"
        );
        assert_eq!(
            walk(r).unwrap().len(),
            8,
            "root, 3 dirs, 3 files and the link itself"
        );
    }
}
