//! Records on disk, one file per MAC, and the only code that writes them.
//!
//! An update reads the record, changes it and writes it back whole: to a
//! temp file in the same directory, renamed over the record, so a reader
//! (`mkimage nodes`, a second server) sees the old record or the new one,
//! never part of one. One writer per record at a time (a lock per MAC), so
//! concurrent reports about one machine lose no update; reports about
//! different machines do not wait for each other. The file on disk is the
//! truth: nothing is cached, so records survive restarts and every reader
//! sees the same thing. A machine's own reports are fsynced (`update`);
//! what the server saw itself is not (`update_fast`, `defer`): a crash of
//! the host may lose those, never leave a torn record.
//!
//! A change can also be deferred (`defer`): queued in memory, cheaply, on a
//! boot script's latency path, and written once the reply is out
//! (`flush`). Until then it is still the record's next change: any other
//! update of that record applies the queued ones first, in the order they
//! were queued, and every read (`get`, `all`, `tallies`) flushes them first,
//! so nothing that comes later — a kernel fetched, a stage reported — is
//! overwritten by a late write, and no reader sees a record without them.
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
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use super::record::Record;
use super::stage::Stage;

/// The registry, relative to the served dir.
pub const NODES: &str = ".state/nodes";

/// How long after its script a fetch from the same address counts as that machine's.
const FETCH_WINDOW: Duration = Duration::from_secs(600);
/// Addresses remembered before old ones are dropped.
const MAX_FETCHERS: usize = 16384;
/// MACs with deferred changes held before a new one is written at once.
const MAX_DEFERRED: usize = 4096;

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
    /// Changes queued by `defer`, by MAC, oldest first.
    deferred: Mutex<HashMap<String, Vec<Deferred>>>,
    /// The thread that writes deferred changes (`flush_later`), started on
    /// first use; `None` if it could not be.
    writer: OnceLock<Option<Sender<String>>>,
}

/// A change to a record, queued to be written later.
pub type Change = Box<dyn FnOnce(&mut Record) + Send + 'static>;

struct Deferred {
    /// Seconds since the epoch when it was queued (the record's `last_seen`).
    now: u64,
    change: Change,
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
            deferred: Mutex::default(),
            writer: OnceLock::new(),
        }
    }

    /// One machine's record (`mac` normalized), if it has one.
    pub fn get(&self, mac: &str) -> Result<Option<Record>, NodeError> {
        self.flush(mac).unwrap_or_else(|e| tracing::warn!("{e}"));
        read(&self.dir.join(file_name(mac)))
    }

    /// Every record, by MAC.
    pub fn all(&self) -> Result<Vec<Record>, NodeError> {
        self.flush_all().unwrap_or_else(|e| tracing::warn!("{e}"));
        read_all(&self.dir)
    }

    /// Every record's latest stage and whether it is new, without reading
    /// the records (only the first call does).
    pub fn tallies(&self) -> Result<Vec<Tally>, NodeError> {
        self.flush_all().unwrap_or_else(|e| tracing::warn!("{e}"));
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

    /// Queue `change` to `mac`'s record, to be written by [`Store::flush`]
    /// (or before any other change to, or read of, that record). Costs a
    /// map insert, unless too many MACs wait already: then it is written at
    /// once.
    pub fn defer(&self, mac: &str, now: u64, change: Change) -> Result<(), NodeError> {
        let mut deferred = self.deferred.lock().unwrap_or_else(PoisonError::into_inner);
        if deferred.len() < MAX_DEFERRED || deferred.contains_key(mac) {
            deferred
                .entry(mac.to_string())
                .or_default()
                .push(Deferred { now, change });
            return Ok(());
        }
        drop(deferred);
        self.update_fast(mac, now, change).map(drop)
    }

    /// Write the changes deferred for `mac`, if any.
    pub fn flush(&self, mac: &str) -> Result<(), NodeError> {
        let waiting = self
            .deferred
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(mac);
        if waiting {
            self.change(mac, None::<(u64, fn(&mut Record))>, false)?;
        }
        Ok(())
    }

    /// Have the changes deferred for `mac` written soon, by a thread of the
    /// registry's own: their disk writes never hold one of the request
    /// handlers' threads, which the next boot scripts need. Written here
    /// and now if that thread cannot be started.
    pub fn flush_later(self: &Arc<Self>, mac: &str) {
        let writer = self.writer.get_or_init(|| {
            let (tx, rx) = mpsc::channel::<String>();
            let store: Weak<Store> = Arc::downgrade(self);
            let spawned = std::thread::Builder::new()
                .name("mkimage-records".into())
                .spawn(move || {
                    // Ends when the store (and with it the sender) is gone.
                    while let Ok(mac) = rx.recv() {
                        let Some(store) = store.upgrade() else { break };
                        store.flush(&mac).unwrap_or_else(|e| tracing::warn!("{e}"));
                    }
                });
            spawned.ok().map(|_| tx)
        });
        let sent = writer
            .as_ref()
            .is_some_and(|tx| tx.send(mac.to_string()).is_ok());
        if !sent {
            self.flush(mac).unwrap_or_else(|e| tracing::warn!("{e}"));
        }
    }

    /// Write every deferred change.
    pub fn flush_all(&self) -> Result<(), NodeError> {
        let macs: Vec<String> = self
            .deferred
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        macs.iter().try_for_each(|mac| self.flush(mac))
    }

    fn update_with(
        &self,
        mac: &str,
        now: u64,
        change: impl FnOnce(&mut Record),
        durable: bool,
    ) -> Result<Record, NodeError> {
        let record = self.change(mac, Some((now, change)), durable)?;
        Ok(record.expect("a change writes the record"))
    }

    /// Under `mac`'s writer lock: its deferred changes, then `change`
    /// (`None`: only the deferred ones; nothing is written if there are
    /// none), written back; returns what was written. The MAC stays in the
    /// deferred map (an empty list) until the write is done, so a reader's
    /// `flush` waits for a write in flight instead of reading the old record.
    fn change(
        &self,
        mac: &str,
        change: Option<(u64, impl FnOnce(&mut Record))>,
        durable: bool,
    ) -> Result<Option<Record>, NodeError> {
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(mac.to_string())
            .or_default()
            .clone();
        let _one_writer = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let deferred = self
            .deferred
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(mac)
            .map(std::mem::take)
            .unwrap_or_default();
        let written = self.apply(mac, deferred, change, durable);
        let mut map = self.deferred.lock().unwrap_or_else(PoisonError::into_inner);
        if map.get(mac).is_some_and(Vec::is_empty) {
            map.remove(mac);
        }
        written
    }

    /// `change`'s read, changes and write, under the writer lock.
    fn apply(
        &self,
        mac: &str,
        deferred: Vec<Deferred>,
        change: Option<(u64, impl FnOnce(&mut Record))>,
        durable: bool,
    ) -> Result<Option<Record>, NodeError> {
        let Some(first) = deferred
            .first()
            .map(|d| d.now)
            .or(change.as_ref().map(|c| c.0))
        else {
            return Ok(None);
        };
        let path = self.dir.join(file_name(mac));
        let mut record = match read(&path) {
            Ok(Some(r)) if r.mac == mac => r,
            Ok(_) => Record::new(mac, first),
            Err(e) => {
                tracing::warn!("{e}; starting the record afresh");
                Record::new(mac, first)
            }
        };
        for d in deferred {
            (d.change)(&mut record);
            record.last_seen = record.last_seen.max(d.now);
        }
        if let Some((now, change)) = change {
            change(&mut record);
            record.last_seen = record.last_seen.max(now);
        }
        self.write(&path, &record, durable)?;
        if let Some(t) = self
            .tallies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            t.insert(mac.to_string(), (record.stage, record.new));
        }
        Ok(Some(record))
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
#[path = "store_tests.rs"]
mod tests;
