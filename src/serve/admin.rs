//! The admin token: the one place that decides whether a request may read
//! the node registry or change what the server does to a machine when the
//! machine did not report it itself (a profile for its next boot, its power
//! state as an operator saw it). Every such route asks [`refusal`] first.
//!
//! The token comes from `serve --admin-token-file FILE` (mode 0600: a file
//! that group or others can read is refused), or, without the flag, from
//! `DIR/.state/admin.token`, made (0600) on first start. A client sends it
//! as `Authorization: Bearer TOKEN`; a browser signs in once on the status
//! page, which sets it as an HttpOnly, SameSite=Strict cookie. Compared in
//! constant time; never logged, never in a reply.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use http::request::Parts;
use http::HeaderMap;
use sha2::{Digest, Sha256};

use super::reply::Reply;
use super::tokens::{bearer, constant_time_eq, fill_random};
use crate::hex::hex;

/// Where the generated token is kept, under the served dir.
pub const ADMIN_TOKEN: &str = ".state/admin.token";
/// The status page's sign-in cookie.
pub const COOKIE: &str = "mkimage_admin";

/// The admin token and whether the status page's node part is public.
pub struct Admin {
    token: String,
    pub public_status: bool,
}

impl Admin {
    /// The token of `file` (checked), else of `DIR/.state/admin.token`
    /// (made on first start); and where it was read from.
    pub fn load(served: &Path, file: Option<&Path>) -> Result<(Admin, PathBuf), String> {
        let path = match file {
            Some(f) => f.to_path_buf(),
            None => {
                let path = served.join(ADMIN_TOKEN);
                if !path.exists() {
                    create(&path)?;
                }
                path
            }
        };
        let token = read_token(&path)?;
        Ok((
            Admin {
                token,
                public_status: false,
            },
            path,
        ))
    }

    /// An admin with `token` (tests).
    pub fn with_token(token: &str) -> Admin {
        Admin {
            token: token.to_string(),
            public_status: false,
        }
    }

    /// The request carries the admin token (bearer header), or the
    /// status page's cookie made from it.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let by_header =
            bearer(headers).is_some_and(|p| constant_time_eq(p.as_bytes(), self.token.as_bytes()));
        let by_cookie = cookie(headers, COOKIE)
            .is_some_and(|c| constant_time_eq(c.as_bytes(), self.cookie().as_bytes()));
        by_header | by_cookie
    }

    /// The sign-in cookie's value: derived from the token (sha256), so the
    /// token itself never goes back to a browser.
    pub fn cookie(&self) -> String {
        let digest = Sha256::digest(format!("mkimage status cookie\0{}", self.token));
        hex(&digest)
    }

    /// Whether `presented` is the admin token (the sign-in form).
    pub fn is_token(&self, presented: &str) -> bool {
        constant_time_eq(presented.trim().as_bytes(), self.token.as_bytes())
    }
}

/// `None` when `req` may read the registry or change state on an
/// operator's behalf; else the 401 to send instead.
pub fn refusal(admin: &Admin, req: &Parts) -> Option<Reply> {
    if admin.allows(&req.headers) {
        return None;
    }
    Some(
        Reply::text(
            401,
            "this needs the server's admin token: send `Authorization: Bearer TOKEN` \
             (serve --admin-token-file, else DIR/.state/admin.token on the server)\n",
        )
        .with(http::header::WWW_AUTHENTICATE, "Bearer realm=\"mkimage\""),
    )
}

/// A cookie's value from the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// The token in `path`, refused if group or others can read the file.
pub fn read_token(path: &Path) -> Result<String, String> {
    let meta =
        fs::metadata(path).map_err(|e| format!("admin token file {}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "admin token file {} has mode {mode:04o}: group or others can read it; \
             run `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    let text = fs::read_to_string(path)
        .map_err(|e| format!("admin token file {}: {e}", path.display()))?;
    let token = text.trim();
    if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "admin token file {}: give one token of at least 16 characters without blanks \
             (e.g. `head -c 24 /dev/urandom | base64`)",
            path.display()
        ));
    }
    Ok(token.to_string())
}

/// A new random token at `path`, 0600, written whole or not at all.
fn create(path: &Path) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("cannot make the admin token {}: {e}", path.display());
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(fail)?;
    }
    let mut bytes = [0u8; 24];
    fill_random(&mut bytes);
    let tmp = path.with_extension("token.tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail)?;
    f.write_all(format!("{}\n", hex(&bytes)).as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(fail)?;
    fs::rename(&tmp, path).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_are_made_private_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let (admin, path) = Admin::load(dir.path(), None).unwrap();
        assert_eq!(path, dir.path().join(ADMIN_TOKEN));
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let token = fs::read_to_string(&path).unwrap();
        assert!(admin.is_token(&token));
        let (again, _) = Admin::load(dir.path(), None).unwrap();
        assert!(again.is_token(&token), "kept across restarts");

        let f = dir.path().join("t");
        fs::write(&f, "0123456789abcdef0123\n").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        let e = Admin::load(dir.path(), Some(&f)).err().unwrap();
        assert!(
            e.contains("chmod 600") && e.contains(&*f.to_string_lossy()),
            "{e}"
        );
        assert!(!e.contains("0123456789abcdef"), "never the token: {e}");
        fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
        let (admin, _) = Admin::load(dir.path(), Some(&f)).unwrap();
        let mut h = HeaderMap::new();
        assert!(!admin.allows(&h));
        h.insert(
            "authorization",
            "Bearer 0123456789abcdef0123".parse().unwrap(),
        );
        assert!(admin.allows(&h));
        let mut h = HeaderMap::new();
        let value = format!("a=b; mkimage_admin={}", admin.cookie());
        h.insert("cookie", value.parse().unwrap());
        assert!(admin.allows(&h));
        assert!(!admin.cookie().contains("0123456789abcdef0123"));
        h.insert("cookie", "mkimage_admin=wrong".parse().unwrap());
        assert!(!admin.allows(&h));
    }
}
