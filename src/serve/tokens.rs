//! Boot tokens: what a machine proves a report is its own with.
//!
//! Every boot script rendered for a MAC carries a fresh random token
//! (`mkimage.token=` on the kernel command line, [`Tokens::issue`]). The
//! init, `mkimage-report` and the discovery overlay send it back as
//! `Authorization: Bearer TOKEN`; the node API accepts a stage or inventory
//! report for a MAC only when [`Tokens::verify`] says the token was issued
//! to that MAC.
//!
//! - **Validity window**: a token is good for [`WINDOW`] (24 hours) after
//!   it was issued, and only while it is one of the [`PER_MAC`] newest
//!   tokens of its MAC (a machine that chains its script twice, or a
//!   failed boot retried, still holds a good token).
//! - **Bounded memory**: at most [`MAX_MACS`] MACs are held; when full,
//!   expired entries go first, then the MAC whose newest token is oldest.
//! - **Restart**: tokens live in memory only and do not survive a server
//!   restart. A machine booted before the restart is refused (403) until
//!   its next boot: nothing it claims afterwards can be told from a spoof.
//! - Tokens are compared in constant time, never logged, never stored.
//!
//! The API for other modules is `issue`, `verify` and [`bearer`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::HeaderMap;

use crate::hex::hex;

/// How long a token stays valid after it was issued.
pub const WINDOW: Duration = Duration::from_secs(24 * 3600);
/// How many of a MAC's newest tokens are valid at once.
pub const PER_MAC: usize = 32;
/// The most MACs whose tokens are held.
pub const MAX_MACS: usize = 16_384;
/// Random bytes in a token (hex-encoded on the command line).
const BYTES: usize = 16;

/// A token as it goes on the kernel command line (hex).
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

/// The tokens issued, by MAC (normalized, lower case with colons).
pub struct Tokens {
    by_mac: Mutex<HashMap<String, Vec<Issued>>>,
    window: Duration,
}

struct Issued {
    at: Instant,
    bytes: [u8; BYTES],
}

impl Default for Tokens {
    fn default() -> Self {
        Tokens::with_window(WINDOW)
    }
}

impl Tokens {
    /// Tokens valid for `window` after they are issued.
    pub fn with_window(window: Duration) -> Tokens {
        Tokens {
            by_mac: Mutex::new(HashMap::new()),
            window,
        }
    }

    /// A fresh token for `mac`'s boot; the oldest of its tokens beyond
    /// [`PER_MAC`] stops being valid.
    pub fn issue(&self, mac: &str) -> Token {
        let bytes = random();
        let now = Instant::now();
        let mut map = self.by_mac.lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(mac) && map.len() >= MAX_MACS {
            self.evict(&mut map, now);
        }
        let list = map.entry(mac.to_string()).or_default();
        list.push(Issued { at: now, bytes });
        if list.len() > PER_MAC {
            list.remove(0);
        }
        Token(hex(&bytes))
    }

    /// Whether `presented` is a valid token issued to `mac`.
    pub fn verify(&self, mac: &str, presented: &str) -> bool {
        let Some(presented) = unhex(presented.trim()) else {
            return false;
        };
        let now = Instant::now();
        let map = self.by_mac.lock().unwrap_or_else(|e| e.into_inner());
        let Some(list) = map.get(mac) else {
            return false;
        };
        // Every candidate is compared in full, whatever matched before.
        list.iter().fold(false, |ok, t| {
            let fresh = now.duration_since(t.at) <= self.window;
            ok | (constant_time_eq(&t.bytes, &presented) & fresh)
        })
    }

    /// How many MACs hold tokens (for tests and metrics).
    pub fn len(&self) -> usize {
        self.by_mac.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn evict(&self, map: &mut HashMap<String, Vec<Issued>>, now: Instant) {
        map.retain(|_, list| {
            list.last()
                .is_some_and(|t| now.duration_since(t.at) <= self.window)
        });
        if map.len() < MAX_MACS {
            return;
        }
        let oldest = map
            .iter()
            .min_by_key(|(_, list)| list.last().map(|t| t.at))
            .map(|(mac, _)| mac.clone());
        if let Some(mac) = oldest {
            map.remove(&mac);
        }
    }
}

/// The token of an `Authorization: Bearer TOKEN` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// `a == b`, in time that depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// `BYTES` bytes from the kernel's random source (getrandom(2)).
fn random() -> [u8; BYTES] {
    let mut out = [0u8; BYTES];
    fill_random(&mut out);
    out
}

/// Fill `buf` from getrandom(2); it blocks only before the pool is seeded.
pub fn fill_random(buf: &mut [u8]) {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n > 0 {
            done += n as usize;
        } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            // getrandom(2) fails only on a kernel older than 3.17.
            panic!("getrandom failed: {}", std::io::Error::last_os_error());
        }
    }
}

fn unhex(s: &str) -> Option<[u8; BYTES]> {
    if s.len() != BYTES * 2 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; BYTES];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "52:54:00:aa:aa:aa";
    const B: &str = "52:54:00:bb:bb:bb";

    #[test]
    fn a_token_is_good_for_its_mac_only_and_the_newest_few() {
        let tokens = Tokens::default();
        let a = tokens.issue(A);
        assert_eq!(a.as_str().len(), 32);
        assert!(tokens.verify(A, a.as_str()));
        assert!(tokens.verify(A, &format!(" {} ", a.as_str())));
        assert!(!tokens.verify(B, a.as_str()), "another MAC's token");
        assert!(!tokens.verify(A, &a.as_str()[..30]), "a prefix");
        assert!(!tokens.verify(A, ""));
        assert!(!tokens.verify(A, &"zz".repeat(16)));
        let newer: Vec<Token> = (0..PER_MAC).map(|_| tokens.issue(A)).collect();
        assert!(!tokens.verify(A, a.as_str()), "pushed out by newer ones");
        assert!(newer.iter().all(|t| tokens.verify(A, t.as_str())));
        assert_ne!(newer[0], newer[1]);
        assert_eq!(format!("{:?}", newer[0]), "Token(…)");
    }

    #[test]
    fn tokens_expire_after_the_window() {
        let tokens = Tokens::with_window(Duration::from_millis(30));
        let t = tokens.issue(A);
        assert!(tokens.verify(A, t.as_str()));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!tokens.verify(A, t.as_str()));
    }

    #[test]
    fn bearer_headers_and_constant_time_compare() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(http::header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(http::header::AUTHORIZATION, "bearer  abc ".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(http::header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
