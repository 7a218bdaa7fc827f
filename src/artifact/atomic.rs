//! Writing into the output dir so that a reader only ever sees a whole
//! file: a temp file in the same dir, synced, renamed into place; plus the
//! sha256 helpers every artifact and cache uses.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use sha2::{Digest, Sha256};

use crate::hex::hex;

/// Write `dir/name` atomically: `write` fills a temp file in `dir`, which is
/// synced and renamed over `name`. On error the temp file is removed and any
/// existing `name` is untouched.
pub fn write_atomic(
    dir: &Path,
    name: &str,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> anyhow::Result<PathBuf> {
    fs::create_dir_all(dir)
        .with_context(|| format!("cannot create output dir {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temp file in {}", dir.display()))?;
    // Held, so that another build's sweep of staged files in `dir` leaves it.
    let _held = crate::flock::hold_file(tmp.as_file())
        .with_context(|| format!("cannot lock {}", tmp.path().display()))?;
    write(tmp.as_file_mut())
        .with_context(|| format!("cannot write {}", dir.join(name).display()))?;
    tmp.as_file().sync_all()?;
    let dest = dir.join(name);
    tmp.persist(&dest)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot rename into {}", dest.display()))?;
    set_mode(&dest, 0o644)?;
    Ok(dest)
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Publish a finished file (already written somewhere in `dir`'s filesystem,
/// e.g. a temp file in `dir`) as `dir/name`, with `dir/name.sha256`, and
/// keep it in the content store (`objects`) under its sha256.
/// Returns (size, sha256).
pub fn publish(dir: &Path, name: &str, staged: &Path) -> anyhow::Result<(u64, String)> {
    let (size, sha) = sha256_file(staged)?;
    File::open(staged)?.sync_all()?;
    super::objects::add(dir, staged, &sha)?;
    let dest = dir.join(name);
    set_mode(staged, 0o644)?;
    fs::rename(staged, &dest)
        .with_context(|| format!("cannot rename {} to {}", staged.display(), dest.display()))?;
    write_atomic(dir, &format!("{name}.sha256"), |f| {
        writeln!(f, "{sha}  {name}")
    })?;
    Ok((size, sha))
}

/// A staged artifact: its temp file, held (`flock::hold_file`) until dropped
/// or kept.
pub type Staged = tempfile::NamedTempFile<crate::flock::Held>;

/// A temp path in `dir` for staging an artifact before `publish`; removed on
/// drop unless published.
pub fn staging_file(dir: &Path, name: &str) -> anyhow::Result<Staged> {
    fs::create_dir_all(dir)
        .with_context(|| format!("cannot create output dir {}", dir.display()))?;
    let staged = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temp file in {}", dir.display()))?;
    // Held while written, so a later build can tell it from one a killed
    // build left behind (see `flock::stale`).
    let held = crate::flock::hold_file(staged.as_file())
        .with_context(|| format!("cannot lock {}", staged.path().display()))?;
    let (_file, path) = staged.into_parts();
    Ok(tempfile::NamedTempFile::from_parts(held, path))
}

/// Size and hex sha256 of a file.
pub fn sha256_file(path: &Path) -> anyhow::Result<(u64, String)> {
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    sha256_reader(&mut file).with_context(|| format!("cannot read {}", path.display()))
}

/// Size and hex sha256 of everything a reader yields.
pub fn sha256_reader(reader: &mut impl Read) -> io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex(&hasher.finalize())))
}

/// Hex sha256 of bytes.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Seconds since the epoch, now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `YYYY-MM-DD HH:MM:SS` for seconds since the epoch (UTC).
pub fn utc(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// SOURCE_DATE_EPOCH from the environment, else `fallback`.
pub fn source_date_epoch(fallback: u64) -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(fallback)
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00");
        assert_eq!(super::utc(1_700_000_000), "2023-11-14 22:13:20");
        assert_eq!(super::utc(951_782_400), "2000-02-29 00:00:00");
    }
}
