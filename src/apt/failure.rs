//! What went wrong fetching from a mirror, read from the output of apt (or
//! of a bootstrapper running apt or wget), so that a build retries what a
//! mirror mends by itself — a file caught mid-sync (its size or hash is not
//! what the signed index says; apt never retries those), a 5xx, a dropped
//! connection — and fails at once on what it will not (a 404), in one line
//! that names the mirror, the file and the mismatch instead of twenty lines
//! of apt.

use std::path::PathBuf;
use std::time::Duration;

/// How a file failed to arrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Served at `got` bytes where the signed index says `want`.
    Size { got: u64, want: u64 },
    /// Its content is not what the signed index's hash says.
    Hash,
    /// An HTTP error status.
    Status { code: u16, reason: String },
    /// The connection could not be made, or broke.
    Connection(String),
    /// A bootstrapper's "could not download" that says no more (debootstrap).
    NotDownloaded,
    /// Anything else apt said about the file.
    Other(String),
}

/// One file that failed to arrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub url: String,
    pub problem: Problem,
}

impl Failure {
    /// Does it pass by itself (a retry may well succeed)? A size or hash
    /// mismatch is a mirror caught between files of two syncs; 408, 429 and
    /// 5xx are an overloaded or restarting server; a connection failure is
    /// the network. A 404 of a file or anything else is an answer.
    pub fn transient(&self) -> bool {
        match &self.problem {
            Problem::Size { .. }
            | Problem::Hash
            | Problem::Connection(_)
            | Problem::NotDownloaded => true,
            Problem::Status { code, .. } => matches!(code, 408 | 429 | 500..=599),
            Problem::Other(_) => false,
        }
    }

    /// One line: the mirror, the file (a by-hash URL named by the file it
    /// stands for, looked up in `inreleases`) and what is wrong with it.
    pub fn describe(&self, mirror: &str, inreleases: &[PathBuf]) -> String {
        let file = file_name(&self.url, mirror, inreleases);
        let (m, f) = (mirror, &file);
        let index = if f.starts_with("dists/") {
            "its signed InRelease"
        } else {
            "its signed package index"
        };
        match &self.problem {
            Problem::Size { got, want } => format!(
                "the mirror {m} serves {f} at {got} bytes but {index} says {want} (a mirror caught mid-sync?)"
            ),
            Problem::Hash => format!(
                "the mirror {m} serves {f} with a sha256 other than {index} says (a mirror caught mid-sync?)"
            ),
            Problem::Status { code, reason } => {
                format!("the mirror {m} answers {code} {reason} for {f}")
            }
            Problem::Connection(why) => {
                format!("the mirror {m} could not be reached for {f} ({why})")
            }
            Problem::NotDownloaded => format!("the mirror {m} did not deliver {f}"),
            Problem::Other(why) => format!("the mirror {m} failed to deliver {f}: {why}"),
        }
    }
}

/// A fetch from the mirror that failed for good, as one line.
#[derive(Debug, thiserror::Error)]
#[error("{what}{}", self.advice())]
pub struct MirrorError {
    /// `Failure::describe` of the first failure (and how many more).
    pub what: String,
    pub transient: bool,
    pub retries: u32,
    pub elapsed: Duration,
}

impl MirrorError {
    /// The error for the failures of a command that `retry` gave up on.
    pub fn new(
        failures: &[Failure],
        mirror: &str,
        inreleases: &[PathBuf],
        retries: u32,
        elapsed: Duration,
    ) -> Option<MirrorError> {
        let first = failures
            .iter()
            .find(|f| !f.transient())
            .or(failures.first())?;
        let mut what = first.describe(mirror, inreleases);
        if failures.len() > 1 {
            what.push_str(&format!(" (and {} more files)", failures.len() - 1));
        }
        Some(MirrorError {
            what,
            transient: failures.iter().all(Failure::transient),
            retries,
            elapsed,
        })
    }

    fn advice(&self) -> String {
        const WHAT_TO_DO: &str = "try again later or set mirror: in vars/common.yml";
        match (self.transient, self.retries) {
            (false, _) => String::new(),
            (true, 0) => format!("; {WHAT_TO_DO}"),
            (true, n) => format!(
                ": retried {n} time{} over {} s; {WHAT_TO_DO}",
                if n == 1 { "" } else { "s" },
                self.elapsed.as_secs()
            ),
        }
    }
}

/// The files apt (or debootstrap) reports it could not fetch, in order.
pub fn parse(output: &str) -> Vec<Failure> {
    let mut found: Vec<Failure> = Vec::new();
    for line in output.lines() {
        let line = line.trim();
        let failure = if let Some(rest) = line
            .strip_prefix("E: Failed to fetch ")
            .or_else(|| line.strip_prefix("W: Failed to fetch "))
        {
            let (url, message) = rest.split_once("  ").unwrap_or((rest, ""));
            Failure {
                url: url.trim().to_string(),
                problem: problem(message),
            }
        } else if let Some(url) = debootstrap_failure(line) {
            url
        } else {
            continue;
        };
        if !found.iter().any(|f| f.url == failure.url) {
            found.push(failure);
        }
    }
    found
}

/// debootstrap's own words: `W: URL was corrupt` (after its own ten
/// retries), `E: Couldn't download URL`, `W: Couldn't download package P
/// (ver V arch A) at URL`.
fn debootstrap_failure(line: &str) -> Option<Failure> {
    if let Some(url) = line
        .strip_prefix("W: ")
        .and_then(|l| l.strip_suffix(" was corrupt"))
    {
        return Some(Failure {
            url: url.to_string(),
            problem: Problem::Hash,
        });
    }
    let url = match line.strip_prefix("E: Couldn't download ") {
        Some(url) if url.contains("://") => url,
        _ => {
            line.strip_prefix("W: Couldn't download package ")?
                .rsplit_once(" at ")?
                .1
        }
    };
    Some(Failure {
        url: url.to_string(),
        problem: Problem::NotDownloaded,
    })
}

/// apt's message about one file (after the URL), without its `[IP: …]`.
fn problem(message: &str) -> Problem {
    let message = match message.rfind(" [IP: ") {
        Some(at) => &message[..at],
        None => message,
    }
    .trim();
    if let Some(sizes) = message.strip_prefix("File has unexpected size (") {
        let numbers: Vec<u64> = sizes
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .take(2)
            .filter_map(|s| s.parse().ok())
            .collect();
        if let [got, want] = numbers[..] {
            return Problem::Size { got, want };
        }
    }
    if message.starts_with("Hash Sum mismatch") {
        return Problem::Hash;
    }
    let mut words = message.splitn(2, char::is_whitespace);
    if let (Some(code), Some(reason)) = (words.next(), words.next()) {
        if let (3, Ok(code)) = (code.len(), code.parse::<u16>()) {
            return Problem::Status {
                code,
                reason: reason.trim().to_string(),
            };
        }
    }
    const CONNECTION: &[&str] = &[
        "Could not connect",
        "Connection failed",
        "Connection timed out",
        "Connection reset",
        "Error reading from server",
        "Temporary failure resolving",
        "Could not resolve",
        "Undetermined Error",
        "Broken pipe",
    ];
    if CONNECTION.iter().any(|c| message.contains(c)) {
        return Problem::Connection(message.to_string());
    }
    Problem::Other(message.to_string())
}

/// The file a URL names, relative to the mirror; a by-hash URL
/// (`…/by-hash/SHA256/HEX`, what apt asks a by-hash mirror for) by the
/// file of that hash in the suite's InRelease, when one is at hand.
fn file_name(url: &str, mirror: &str, inreleases: &[PathBuf]) -> String {
    let file = url
        .strip_prefix(mirror)
        .and_then(|f| f.strip_prefix('/'))
        .unwrap_or(url);
    let Some((dir, hash)) = file.split_once("/by-hash/SHA256/") else {
        return file.to_string();
    };
    inreleases
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .find_map(|text| by_hash_name(&text, dir, hash))
        .unwrap_or_else(|| file.to_string())
}

/// In a Release file's `SHA256:` list, the file in `dir` (e.g.
/// `dists/trixie/main/binary-amd64`) whose hash is `hash`.
fn by_hash_name(release: &str, dir: &str, hash: &str) -> Option<String> {
    let (dists, sub) = match dir.split('/').collect::<Vec<_>>()[..] {
        ["dists", suite, ref rest @ ..] => (format!("dists/{suite}"), rest.join("/")),
        _ => return None,
    };
    let mut in_sha256 = false;
    for line in release.lines() {
        if !line.starts_with(' ') {
            in_sha256 = line.trim_end() == "SHA256:";
            continue;
        }
        let mut words = line.split_whitespace();
        if let (true, Some(h), Some(_size), Some(name)) =
            (in_sha256, words.next(), words.next(), words.next())
        {
            let parent = name.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
            if h == hash && parent == sub {
                return Some(format!("{dists}/{name}"));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIRROR: &str = "http://mirror.invalid/debian";

    /// `apt-get update` against a mirror caught mid-sync (as this
    /// workplace's serves trixie's non-free-firmware Contents-amd64.gz).
    const SIZE: &str = "\
Get:4 http://mirror.invalid/debian trixie/non-free-firmware amd64 Contents (mkimage) [1174 B]
Err:4 http://mirror.invalid/debian trixie/non-free-firmware amd64 Contents (mkimage)
  File has unexpected size (1149 != 1174). Mirror sync in progress? [IP: 192.0.2.80 80]
  Hashes of expected file:
   - Filesize:1174 [weak]
Reading package lists...
E: Failed to fetch http://mirror.invalid/debian/dists/trixie/non-free-firmware/Contents-amd64.gz  File has unexpected size (1149 != 1174). Mirror sync in progress? [IP: 192.0.2.80 80]
   Hashes of expected file:
    - Filesize:1174 [weak]
    - SHA256:aaea69c4f377c949de2a00b1156d30e0d0c0029024de3a2ffb4cabc945b81304
   Release file created at: Sat, 21 Nov 2026 09:15:44 +0000
E: Some index files failed to download. They have been ignored, or old ones used instead.
";

    #[test]
    fn a_size_mismatch_is_one_line_naming_mirror_file_and_sizes() {
        let failures = parse(SIZE);
        assert_eq!(
            failures,
            [Failure {
                url: format!("{MIRROR}/dists/trixie/non-free-firmware/Contents-amd64.gz"),
                problem: Problem::Size {
                    got: 1149,
                    want: 1174
                },
            }]
        );
        assert!(failures[0].transient());
        let err = MirrorError::new(&failures, MIRROR, &[], 3, Duration::from_millis(14_300))
            .unwrap()
            .to_string();
        assert_eq!(
            err,
            "the mirror http://mirror.invalid/debian serves dists/trixie/non-free-firmware/Contents-amd64.gz \
             at 1149 bytes but its signed InRelease says 1174 (a mirror caught mid-sync?): retried 3 times \
             over 14 s; try again later or set mirror: in vars/common.yml"
        );
    }

    #[test]
    fn statuses_connections_and_hashes() {
        let out = "\
E: Failed to fetch http://mirror.invalid/debian/pool/main/b/busybox/busybox-static_1_amd64.deb  404  Not Found [IP: 192.0.2.80 80]
E: Failed to fetch http://mirror.invalid/debian/dists/trixie/InRelease  503  Service Unavailable [IP: 192.0.2.80 80]
W: Failed to fetch http://mirror.invalid/debian/dists/trixie/InRelease  Connection failed [IP: 192.0.2.80 80]
E: Failed to fetch http://127.0.0.1:9/debian/dists/trixie/InRelease  Could not connect to 127.0.0.1:9 (127.0.0.1). - connect (111: Connection refused)
E: Failed to fetch http://mirror.invalid/debian/dists/trixie/main/by-hash/SHA256/1b50  Hash Sum mismatch
";
        let f = parse(out);
        assert_eq!(f.len(), 4, "one entry per URL: {f:?}");
        assert_eq!(
            f[0].problem,
            Problem::Status {
                code: 404,
                reason: "Not Found".into()
            }
        );
        assert!(!f[0].transient(), "a 404 is an answer");
        assert!(f[1].transient(), "503");
        assert!(
            matches!(&f[2].problem, Problem::Connection(m) if m.contains("Connection refused"))
        );
        assert!(f[2].transient());
        assert_eq!(f[3].problem, Problem::Hash);
        assert_eq!(
            f[0].describe(MIRROR, &[]),
            "the mirror http://mirror.invalid/debian answers 404 Not Found for pool/main/b/busybox/busybox-static_1_amd64.deb"
        );
        // One permanent failure among transient ones: no retry advice.
        let err = MirrorError::new(&f, MIRROR, &[], 0, Duration::ZERO).unwrap();
        assert!(!err.transient);
        assert!(err.to_string().ends_with("(and 3 more files)"), "{err}");
    }

    #[test]
    fn a_by_hash_url_is_named_by_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let release = dir.path().join("InRelease");
        std::fs::write(
            &release,
            "Suite: trixie\nMD5Sum:\n 0a18daeca69c35892c9ab2792356de7f   518858 non-free-firmware/Contents-all\n\
             SHA256:\n 276294044571d2c2182e2051162259fec62f3cdb3f74e4a81632276b475b989d   518858 non-free-firmware/Contents-all\n \
             1b50cb00122d48326db4607dff98cd8ad9ca6a1eb3ebee7e53d39ead2e727842    27018 non-free-firmware/Contents-all.gz\n \
             1b50cb00122d48326db4607dff98cd8ad9ca6a1eb3ebee7e53d39ead2e727842    27018 main/Contents-all.gz\n",
        )
        .unwrap();
        let f = Failure {
            url: format!("{MIRROR}/dists/trixie/non-free-firmware/by-hash/SHA256/1b50cb00122d48326db4607dff98cd8ad9ca6a1eb3ebee7e53d39ead2e727842"),
            problem: Problem::Size { got: 26000, want: 27018 },
        };
        assert!(f
            .describe(MIRROR, &[dir.path().join("missing"), release])
            .contains(" serves dists/trixie/non-free-firmware/Contents-all.gz at 26000 bytes "));
        assert!(
            f.describe(MIRROR, &[]).contains("/by-hash/SHA256/1b50"),
            "without an InRelease the URL's path stands"
        );
    }

    #[test]
    fn debootstraps_words() {
        let out = "\
W: Retrying failed download of http://mirror.invalid/debian/dists/bookworm/main/binary-amd64/Packages.xz
W: http://mirror.invalid/debian/dists/bookworm/main/binary-amd64/Packages.xz was corrupt
E: Couldn't download http://mirror.invalid/debian/dists/bookworm/main/binary-amd64/Packages
W: Couldn't download package libc6 (ver 2.36-9 arch amd64) at http://mirror.invalid/debian/pool/main/g/glibc/libc6_2.36-9_amd64.deb
E: Couldn't find these debs: nonexistent
";
        let f = parse(out);
        assert_eq!(f.len(), 3, "{f:?}");
        assert_eq!(f[0].problem, Problem::Hash);
        assert_eq!(f[1].problem, Problem::NotDownloaded);
        assert!(f[2].url.ends_with("libc6_2.36-9_amd64.deb"));
        assert!(f.iter().all(Failure::transient));
        assert!(
            parse("E: Couldn't find these debs: nonexistent\nE: Unable to locate package x\n")
                .is_empty()
        );
    }
}
