//! `mkimage inspect`: list the entries of a squashfs, cpio.gz or initrd.
//!
//! The format is found by magic, not by name: squashfs (`hsqs`), or a
//! sequence of newc cpio archives, each plain or compressed (gzip, zstd) —
//! the kernel's initramfs format, which is also what overlays are. One line
//! per entry: mode, uid/gid, size (or major,minor), path, and `-> target`,
//! `(whiteout)` where they apply. A file that is none of these, or is cut
//! short, is a usage error (exit 2), never a panic.

use std::io::{BufRead, Read};
use std::path::Path;

use crate::archive::{mode_string, squashfs_read, ListEntry};
use crate::UsageError;

/// One archive found in the file: its format, where it starts, its entries.
pub struct Segment {
    pub format: &'static str,
    pub offset: u64,
    pub entries: Vec<ListEntry>,
}

/// `mkimage inspect FILE` (one line per entry), or with `summary` the
/// sizes by top-level directory and kernel subsystem.
pub fn run(file: &Path, summary: bool) -> anyhow::Result<()> {
    let segments = inspect(file)?;
    let out = if summary {
        let entries: Vec<ListEntry> = segments
            .iter()
            .flat_map(|s| s.entries.iter().cloned())
            .collect();
        let format = segments
            .iter()
            .map(|s| s.format)
            .collect::<Vec<_>>()
            .join(" + ");
        let on_disk = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
        crate::inspect_summary::render(
            file,
            &format,
            on_disk,
            &crate::inspect_summary::summarize(&entries),
        )
    } else {
        listing(&segments)
    };
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`| head`) is not an error worth a message.
    let _ = stdout
        .write_all(out.as_bytes())
        .and_then(|_| stdout.flush());
    Ok(())
}

fn listing(segments: &[Segment]) -> String {
    let many = segments.len() > 1;
    let mut out = String::new();
    for seg in segments {
        if many {
            out.push_str(&format!(
                "# {} at byte {}: {} entries\n",
                seg.format,
                seg.offset,
                seg.entries.len()
            ));
        }
        for e in &seg.entries {
            out.push_str(&format_entry(e));
            out.push('\n');
        }
    }
    out
}

/// `drwxr-xr-x 0/0 0 etc`, `lrwxrwxrwx 0/0 7 bin -> usr/bin`,
/// `c--------- 0/0 0,0 etc/gone (whiteout)`.
pub fn format_entry(e: &ListEntry) -> String {
    let ft = e.file_type();
    let size = if ft == libc::S_IFCHR || ft == libc::S_IFBLK {
        format!("{},{}", e.rdev.0, e.rdev.1)
    } else {
        e.size.to_string()
    };
    let mut line = format!(
        "{} {:>5}/{:<5} {:>10} {}",
        mode_string(e.mode),
        e.uid,
        e.gid,
        size,
        e.path
    );
    if let Some(t) = &e.target {
        line.push_str(" -> ");
        line.push_str(t);
    }
    if e.is_whiteout() {
        line.push_str(" (whiteout)");
    }
    line
}

/// Identify and list `file`.
pub fn inspect(file: &Path) -> anyhow::Result<Vec<Segment>> {
    let mut head = [0u8; 6];
    let n = std::fs::File::open(file)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| UsageError(format!("{}: cannot read: {e}", file.display())))?;
    if n >= 4 && &head[..4] == b"hsqs" {
        let entries = quiet_catch(|| squashfs_read::read_entries(file))
            .map_err(|e| UsageError(format!("{}: corrupt squashfs: {e}", file.display())))?;
        return Ok(vec![Segment {
            format: "squashfs",
            offset: 0,
            entries,
        }]);
    }
    let bytes = std::fs::read(file)
        .map_err(|e| UsageError(format!("{}: cannot read: {e}", file.display())))?;
    cpio_segments(&bytes).map_err(|e| UsageError(format!("{}: {e}", file.display())).into())
}

/// Run `f`, turning a panic inside a parser library into an error (and
/// keeping its message off the terminal).
fn quiet_catch<T, E: std::fmt::Display>(f: impl FnOnce() -> Result<T, E>) -> Result<T, String> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    match result {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the image is malformed (the reader gave up)".into()),
    }
}

const GZIP: &[u8] = &[0x1f, 0x8b];
const ZSTD: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const NEWC: &[u8] = b"07070";

/// The file as the kernel reads an initramfs: newc archives, plain or
/// compressed, one after another, with zero padding between them.
pub fn cpio_segments(bytes: &[u8]) -> Result<Vec<Segment>, String> {
    let mut segments = Vec::new();
    let mut pos = 0;
    loop {
        while pos < bytes.len() && bytes[pos] == 0 {
            pos += 1;
        }
        if pos == bytes.len() {
            break;
        }
        let rest = &bytes[pos..];
        let (format, data, used) = if rest.starts_with(NEWC) {
            ("cpio", rest.to_vec(), None)
        } else if rest.starts_with(GZIP) {
            let mut dec = flate2::bufread::GzDecoder::new(rest);
            let mut data = Vec::new();
            dec.read_to_end(&mut data)
                .map_err(|e| format!("gzip data at byte {pos} is corrupt or cut short: {e}"))?;
            let left = dec.into_inner().fill_buf().map(|b| b.len()).unwrap_or(0);
            ("gzip cpio", data, Some(rest.len() - left))
        } else if rest.starts_with(ZSTD) {
            let mut dec = zstd::stream::read::Decoder::with_buffer(rest)
                .map_err(|e| format!("zstd at byte {pos}: {e}"))?
                .single_frame();
            let mut data = Vec::new();
            dec.read_to_end(&mut data)
                .map_err(|e| format!("zstd data at byte {pos} is corrupt or cut short: {e}"))?;
            let left = dec.finish().fill_buf().map(|b| b.len()).unwrap_or(0);
            ("zstd cpio", data, Some(rest.len() - left))
        } else if pos == 0 {
            return Err(
                "not a squashfs image, a newc cpio archive, or a gzip/zstd-compressed one".into(),
            );
        } else {
            return Err(format!(
                "unrecognised data at byte {pos} after the archive(s)"
            ));
        };
        // A compressed stream may itself hold several archives.
        let mut inner = 0;
        let mut entries = Vec::new();
        loop {
            let (mut list, n) =
                parse_newc(&data[inner..]).map_err(|e| format!("{format} at byte {pos}: {e}"))?;
            entries.append(&mut list);
            inner += n;
            while inner < data.len() && data[inner] == 0 {
                inner += 1;
            }
            if used.is_none() || inner >= data.len() {
                break;
            }
        }
        segments.push(Segment {
            format,
            offset: pos as u64,
            entries,
        });
        pos += used.unwrap_or(inner);
    }
    if segments.is_empty() {
        return Err("empty file".into());
    }
    Ok(segments)
}

/// Parse one newc archive up to and including its trailer: the entries and
/// the number of bytes used.
pub fn parse_newc(buf: &[u8]) -> Result<(Vec<ListEntry>, usize), String> {
    let (entries, used) = crate::archive::cpio::read_newc_prefix(buf).map_err(|e| e.to_string())?;
    Ok((entries.iter().map(|e| e.listing()).collect(), used))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::cpio::{write_newc, write_newc_gz, Entry, EntryKind};

    fn sample() -> Vec<Entry> {
        vec![
            Entry::new("etc", EntryKind::Dir, 0o755),
            Entry::new("etc/motd", EntryKind::Data(b"hi\n".to_vec()), 0o644),
            Entry::new("etc/gone", EntryKind::CharDev { major: 0, minor: 0 }, 0),
            Entry::new("bin", EntryKind::Symlink("usr/bin".into()), 0o777),
        ]
    }

    #[test]
    fn lists_concatenated_initrd_segments() {
        // As an initrd can be: a plain cpio (microcode), then a gzip one, then zstd.
        let mut bytes = write_newc(sample()[..1].to_vec(), Vec::new()).unwrap();
        bytes.resize(512, 0);
        bytes.extend(write_newc_gz(sample(), Vec::new(), 6).unwrap());
        let raw = write_newc(sample()[1..2].to_vec(), Vec::new()).unwrap();
        bytes.extend(zstd::bulk::compress(&raw, 3).unwrap());
        let segs = cpio_segments(&bytes).unwrap();
        let formats: Vec<_> = segs.iter().map(|s| (s.format, s.entries.len())).collect();
        assert_eq!(formats, [("cpio", 1), ("gzip cpio", 4), ("zstd cpio", 1)]);
        let lines: Vec<_> = segs[1].entries.iter().map(format_entry).collect();
        assert!(
            lines[0].starts_with("drwxr-xr-x") && lines[0].ends_with(" etc"),
            "{lines:?}"
        );
        assert!(lines[1].contains(" 3 etc/motd"), "{lines:?}");
        assert!(
            lines[2].starts_with("c---------") && lines[2].ends_with("0,0 etc/gone (whiteout)"),
            "{lines:?}"
        );
        assert!(lines[3].ends_with("bin -> usr/bin"), "{lines:?}");
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        assert!(cpio_segments(b"hello world").is_err());
        let gz = write_newc_gz(sample(), Vec::new(), 6).unwrap();
        assert!(cpio_segments(&gz[..gz.len() / 2]).is_err());
        let raw = write_newc(sample(), Vec::new()).unwrap();
        for cut in [3, 50, 115, raw.len() - 20] {
            assert!(cpio_segments(&raw[..cut]).is_err(), "cut at {cut}");
        }
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.squashfs");
        std::fs::write(&bad, b"hsqs\0\0\0\0garbage").unwrap();
        let err = inspect(&bad)
            .err()
            .expect("garbage squashfs must be an error");
        assert_eq!(crate::exit_code(&err), 2, "{err}");
    }
}
