//! Records on disk, one file per MAC, and the only code that writes them.
//!
//! An update reads the record, changes it and writes it back whole: to a
//! temp file in the same directory, renamed over the record, so a reader
//! (`mkimage nodes`, a second server) sees the old record or the new one,
//! never part of one. One writer per record at a time (a lock per MAC), so
//! concurrent reports about one machine lose no update; reports about
//! different machines do not wait for each other. The file on disk is the
//! truth: nothing is cached, so records survive restarts and every reader
//! sees the same thing. The rename is not fsynced: a crash of the host may
//! lose the last report, never leave a torn record.
//!
//! It also remembers which MAC fetched a boot script from which address, so
//! the kernel and initrd fetches (content-addressed URLs without a MAC, for
//! any HTTP cache to share) are put on that machine's record. An address
//! that several MACs fetched scripts from within the window (a NAT, a
//! proxy, a benchmark's clients on loopback) is ambiguous: its fetches go
//! on no record rather than on whichever machine asked last.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::record::Record;
use super::stage::Stage;

/// The registry, relative to the served dir.
pub const NODES: &str = ".state/nodes";

/// How long after its script a fetch from the same address counts as that machine's.
const FETCH_WINDOW: Duration = Duration::from_secs(600);
/// Addresses remembered before old ones are dropped.
const MAX_FETCHERS: usize = 16384;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot create the node registry {path}: {source} (is the served dir writable?)")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the node record {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the node registry {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub struct Store {
    dir: PathBuf,
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    fetchers: Mutex<HashMap<IpAddr, Fetcher>>,
    /// Each record's latest stage and whether it is new, for `/metrics`:
    /// read from disk once, then kept up to date by every write.
    tallies: Mutex<Option<HashMap<String, Tally>>>,
}

/// What `/metrics` counts of a record.
pub type Tally = (Option<Stage>, bool);

/// The last machine that fetched a script from an address, and whether
/// another one did too within the window.
struct Fetcher {
    mac: String,
    at: Instant,
    shared: bool,
}

impl Store {
    /// The registry of the served dir `served` (created on the first write).
    pub fn new(served: &Path) -> Store {
        Store {
            dir: served.join(NODES),
            locks: Mutex::default(),
            fetchers: Mutex::default(),
            tallies: Mutex::default(),
        }
    }

    /// One machine's record (`mac` normalized), if it has one.
    pub fn get(&self, mac: &str) -> Result<Option<Record>, NodeError> {
        read(&self.dir.join(file_name(mac)))
    }

    /// Every record, by MAC.
    pub fn all(&self) -> Result<Vec<Record>, NodeError> {
        read_all(&self.dir)
    }

    /// Every record's latest stage and whether it is new, without reading
    /// the records (only the first call does).
    pub fn tallies(&self) -> Result<Vec<Tally>, NodeError> {
        let mut tallies = self.tallies.lock().unwrap_or_else(PoisonError::into_inner);
        if tallies.is_none() {
            let all = read_all(&self.dir)?;
            *tallies = Some(all.into_iter().map(|r| (r.mac, (r.stage, r.new))).collect());
        }
        Ok(tallies.iter().flat_map(|t| t.values().copied()).collect())
    }

    /// Change `mac`'s record (a new one if it has none) with `change`, and
    /// write it durably (the file and the directory fsynced: a report that
    /// got its 200 survives a power cut); returns what was written.
    /// `last_seen` becomes `now`.
    pub fn update(
        &self,
        mac: &str,
        now: u64,
        change: impl FnOnce(&mut Record),
    ) -> Result<Record, NodeError> {
        self.update_with(mac, now, change, true)
    }

    /// `update` without the fsyncs, for what the server saw itself (a boot
    /// script served, a kernel fetched), which is on a boot's latency path
    /// and which the next boot sees again anyway.
    pub fn update_fast(
        &self,
        mac: &str,
        now: u64,
        change: impl FnOnce(&mut Record),
    ) -> Result<Record, NodeError> {
        self.update_with(mac, now, change, false)
    }

    fn update_with(
        &self,
        mac: &str,
        now: u64,
        change: impl FnOnce(&mut Record),
        durable: bool,
    ) -> Result<Record, NodeError> {
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(mac.to_string())
            .or_default()
            .clone();
        let _one_writer = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let path = self.dir.join(file_name(mac));
        let mut record = match read(&path) {
            Ok(Some(r)) if r.mac == mac => r,
            Ok(_) => Record::new(mac, now),
            Err(e) => {
                tracing::warn!("{e}; starting the record afresh");
                Record::new(mac, now)
            }
        };
        change(&mut record);
        record.last_seen = record.last_seen.max(now);
        self.write(&path, &record, durable)?;
        if let Some(t) = self
            .tallies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            t.insert(mac.to_string(), (record.stage, record.new));
        }
        Ok(record)
    }

    fn write(&self, path: &Path, record: &Record, durable: bool) -> Result<(), NodeError> {
        fs::create_dir_all(&self.dir).map_err(|source| NodeError::Create {
            path: self.dir.clone(),
            source,
        })?;
        let werr = |source| NodeError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".record.")
            .suffix(".tmp")
            .tempfile_in(&self.dir)
            .map_err(werr)?;
        let mut json = serde_json::to_vec_pretty(record).map_err(|e| werr(e.into()))?;
        json.push(b'\n');
        tmp.write_all(&json).map_err(werr)?;
        if durable {
            tmp.as_file().sync_all().map_err(werr)?;
        }
        tmp.persist(path).map_err(|e| werr(e.error))?;
        if durable {
            fs::File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(werr)?;
        }
        Ok(())
    }

    /// `mac` fetched its boot script from `ip`.
    pub fn remember_fetcher(&self, ip: IpAddr, mac: &str) {
        let mut fetchers = self.fetchers.lock().unwrap_or_else(PoisonError::into_inner);
        if fetchers.len() >= MAX_FETCHERS {
            fetchers.retain(|_, f| f.at.elapsed() < FETCH_WINDOW);
        }
        let shared = fetchers
            .get(&ip)
            .is_some_and(|f| f.at.elapsed() < FETCH_WINDOW && (f.shared || f.mac != mac));
        if fetchers.len() < MAX_FETCHERS || fetchers.contains_key(&ip) {
            fetchers.insert(
                ip,
                Fetcher {
                    mac: mac.to_string(),
                    at: Instant::now(),
                    shared,
                },
            );
        }
    }

    /// The machine that fetched a boot script from `ip` lately, if exactly
    /// one did.
    pub fn fetcher(&self, ip: IpAddr) -> Option<String> {
        let fetchers = self.fetchers.lock().unwrap_or_else(PoisonError::into_inner);
        fetchers
            .get(&ip)
            .filter(|f| f.at.elapsed() < FETCH_WINDOW && !f.shared)
            .map(|f| f.mac.clone())
    }
}

/// A record file; `Ok(None)` when there is none. One that does not parse
/// is an error naming it.
fn read(path: &Path) -> Result<Option<Record>, NodeError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(NodeError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| NodeError::Read {
            path: path.to_path_buf(),
            source: e.into(),
        })
}

/// Every record in the registry dir `dir` (none if it does not exist yet),
/// sorted by MAC. A file that does not parse is skipped with a warning.
pub(super) fn read_all(dir: &Path) -> Result<Vec<Record>, NodeError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(NodeError::Read {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut records = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| NodeError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        match read(&entry.path()) {
            Ok(Some(r)) => records.push(r),
            Ok(None) => {}
            Err(e) => tracing::warn!("{e}; skipped"),
        }
    }
    records.sort_by(|a, b| a.mac.cmp(&b.mac));
    Ok(records)
}

/// A record's file name: the MAC with hyphens (`52-54-00-12-34-56.json`).
fn file_name(mac: &str) -> String {
    format!("{}.json", mac.replace(':', "-"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::nodes::stage::Stage;

    #[test]
    fn concurrent_updates_lose_nothing_and_leave_whole_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::new(dir.path()));
        let mac = "52:54:00:00:00:07";
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..25 {
                        store.update(mac, t * 100 + i, |r| r.boots += 1).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let r = store.get(mac).unwrap().unwrap();
        assert_eq!(r.boots, 200, "every update landed");
        let files: Vec<_> = fs::read_dir(dir.path().join(NODES))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(files, ["52-54-00-00-00-07.json"], "no temp files left");
        // Survives a new store (a restart); a corrupt file is skipped by the listing.
        fs::write(
            dir.path().join(NODES).join("52-54-00-00-00-08.json"),
            "{not json",
        )
        .unwrap();
        let again = Store::new(dir.path());
        let all = again.all().unwrap();
        assert_eq!(all.len(), 1);
        let r = again.update(mac, 1, |r| r.saw(Stage::Booted, 1)).unwrap();
        assert_eq!((r.boots, r.stage), (200, Some(Stage::Booted)));
    }

    #[test]
    fn fetches_are_attributed_to_the_one_machine_behind_the_address() {
        let store = Store::new(Path::new("/nonexistent"));
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        assert_eq!(store.fetcher(ip), None);
        store.remember_fetcher(ip, "52:54:00:00:00:01");
        store.remember_fetcher(ip, "52:54:00:00:00:01");
        assert_eq!(
            store.fetcher(ip).as_deref(),
            Some("52:54:00:00:00:01"),
            "the same machine again"
        );
        assert_eq!(store.fetcher("10.0.0.6".parse().unwrap()), None);
        // A second machine behind the same address: nobody's, and it stays so.
        store.remember_fetcher(ip, "52:54:00:00:00:02");
        assert_eq!(store.fetcher(ip), None);
        store.remember_fetcher(ip, "52:54:00:00:00:02");
        assert_eq!(store.fetcher(ip), None, "still shared within the window");
    }
}
