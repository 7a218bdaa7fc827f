//! Counters for `/metrics` (Prometheus text format) and the recent-boots
//! list for the status page: what an operator needs to see that the server
//! is serving and who booted.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// How many script fetches the status page remembers.
const RECENT_BOOTS: usize = 50;

/// One iPXE script fetch.
#[derive(Debug, Clone)]
pub struct Boot {
    /// Seconds since the epoch.
    pub time: u64,
    pub client: String,
    pub mac: Option<String>,
    pub profile: String,
}

#[derive(Default)]
pub struct Metrics {
    http_by_status: Mutex<BTreeMap<u16, u64>>,
    /// Whole-artifact GETs of content-addressed URLs, by manifest kind.
    artifact_downloads: Mutex<BTreeMap<String, u64>>,
    pub http_bytes: AtomicU64,
    pub http_errors: AtomicU64,
    pub active_downloads: AtomicI64,
    pub zero_copy: AtomicU64,
    pub retry_scripts: AtomicU64,
    pub objects_dropped: AtomicU64,
    pub tftp_transfers: AtomicU64,
    pub tftp_bytes: AtomicU64,
    pub tftp_errors: AtomicU64,
    pub active_tftp: AtomicI64,
    pub scripts: AtomicU64,
    boots: Mutex<VecDeque<Boot>>,
    dhcp_replies: Mutex<BTreeMap<&'static str, u64>>,
    dhcp_drops: Mutex<BTreeMap<&'static str, u64>>,
    dhcp_ignored_count: AtomicU64,
}

/// Which in-progress gauge an [`Active`] counts in.
#[derive(Debug, Clone, Copy)]
pub enum Gauge {
    Downloads,
    Tftp,
}

/// Counts one transfer in progress while alive (it may move between tasks).
pub struct Active {
    metrics: Arc<Metrics>,
    gauge: Gauge,
}

impl Drop for Active {
    fn drop(&mut self) {
        self.metrics.gauge(self.gauge).fetch_sub(1, Relaxed);
    }
}

impl Metrics {
    pub fn request(&self, status: u16, bytes: u64) {
        if let Ok(mut map) = self.http_by_status.lock() {
            *map.entry(status).or_default() += 1;
        }
        self.http_bytes.fetch_add(bytes, Relaxed);
    }

    /// One whole-artifact download of `kind` (basefs, overlay, kernel…) began.
    pub fn artifact_download(&self, kind: &str) {
        if let Ok(mut map) = self.artifact_downloads.lock() {
            *map.entry(kind.to_string()).or_default() += 1;
        }
    }

    fn gauge(&self, gauge: Gauge) -> &AtomicI64 {
        match gauge {
            Gauge::Downloads => &self.active_downloads,
            Gauge::Tftp => &self.active_tftp,
        }
    }

    /// Count a transfer in progress until the returned value is dropped.
    pub fn active(self: &Arc<Self>, gauge: Gauge) -> Active {
        self.gauge(gauge).fetch_add(1, Relaxed);
        Active {
            metrics: self.clone(),
            gauge,
        }
    }

    pub fn boot(&self, boot: Boot) {
        self.scripts.fetch_add(1, Relaxed);
        if let Ok(mut boots) = self.boots.lock() {
            if boots.len() == RECENT_BOOTS {
                boots.pop_front();
            }
            boots.push_back(boot);
        }
    }

    /// A proxyDHCP reply sent, by client kind.
    pub fn dhcp_reply(&self, client: &'static str) {
        bump(&self.dhcp_replies, client);
    }

    /// A malformed packet dropped by the proxyDHCP, by reason.
    pub fn dhcp_dropped(&self, reason: &'static str) {
        bump(&self.dhcp_drops, reason);
    }

    /// A well-formed request the proxyDHCP does not answer.
    pub fn dhcp_ignored(&self) {
        self.dhcp_ignored_count.fetch_add(1, Relaxed);
    }

    /// Recent script fetches, newest first.
    pub fn recent_boots(&self) -> Vec<Boot> {
        self.boots
            .lock()
            .map(|b| b.iter().rev().cloned().collect())
            .unwrap_or_default()
    }

    /// The Prometheus text exposition: every row of [`METRICS`].
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, kind, help, lines) in METRICS {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in lines(self) {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        }
        out
    }
}

/// A metric: name, type, help, and its lines (labels, value).
type Row = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Metrics) -> Vec<(String, String)>,
);

/// Every metric `/metrics` shows, in order.
#[rustfmt::skip]
const METRICS: &[Row] = &[
    ("mkimage_http_requests_total", "counter", "HTTP requests answered, by status.", |m| {
        let mut lines = labeled(&m.http_by_status, "status");
        if lines.is_empty() {
            lines.push(("{status=\"200\"}".into(), "0".into()));
        }
        lines
    }),
    ("mkimage_artifact_downloads_total", "counter", "Whole-artifact GETs of content-addressed URLs, by kind (what a cache in front saves).", |m| labeled(&m.artifact_downloads, "kind")),
    ("mkimage_http_sent_bytes_total", "counter", "HTTP body bytes sent.", |m| one(&m.http_bytes)),
    ("mkimage_http_errors_total", "counter", "HTTP responses cut short by an I/O error.", |m| one(&m.http_errors)),
    ("mkimage_http_active_downloads", "gauge", "File downloads in progress over HTTP.", |m| vec![(String::new(), m.active_downloads.load(Relaxed).to_string())]),
    ("mkimage_http_zero_copy_responses_total", "counter", "File bodies sent with sendfile.", |m| one(&m.zero_copy)),
    ("mkimage_ipxe_scripts_total", "counter", "iPXE boot scripts served.", |m| one(&m.scripts)),
    ("mkimage_ipxe_retry_scripts_total", "counter", "Retry scripts served because no boot script could be made (nothing built yet, a profile naming a missing artifact).", |m| one(&m.retry_scripts)),
    ("mkimage_objects_dropped_total", "counter", "Superseded content-addressed objects dropped after the grace period.", |m| one(&m.objects_dropped)),
    ("mkimage_tftp_transfers_total", "counter", "TFTP read requests answered.", |m| one(&m.tftp_transfers)),
    ("mkimage_tftp_sent_bytes_total", "counter", "TFTP data bytes sent.", |m| one(&m.tftp_bytes)),
    ("mkimage_tftp_errors_total", "counter", "TFTP transfers that failed or were refused.", |m| one(&m.tftp_errors)),
    ("mkimage_tftp_active_transfers", "gauge", "TFTP transfers in progress.", |m| vec![(String::new(), m.active_tftp.load(Relaxed).to_string())]),
    ("mkimage_dhcp_replies_total", "counter", "proxyDHCP replies sent, by client kind.", |m| labeled(&m.dhcp_replies, "client")),
    ("mkimage_dhcp_dropped_total", "counter", "Malformed packets the proxyDHCP dropped, by reason.", |m| labeled(&m.dhcp_drops, "reason")),
    ("mkimage_dhcp_ignored_total", "counter", "DHCP requests the proxyDHCP left to others (not PXE, other architectures, the site's exchange).", |m| one(&m.dhcp_ignored_count)),
];

/// An unlabeled counter's one line.
fn one(counter: &AtomicU64) -> Vec<(String, String)> {
    vec![(String::new(), counter.load(Relaxed).to_string())]
}

/// A map's lines, one per key as `{label="KEY"}`.
fn labeled<K: std::fmt::Display + Clone + Ord>(
    map: &Mutex<BTreeMap<K, u64>>,
    label: &str,
) -> Vec<(String, String)> {
    let map = map.lock().map(|m| m.clone()).unwrap_or_default();
    map.iter()
        .map(|(k, n)| (format!("{{{label}=\"{k}\"}}"), n.to_string()))
        .collect()
}

fn bump(map: &Mutex<BTreeMap<&'static str, u64>>, key: &'static str) {
    if let Ok(mut map) = map.lock() {
        *map.entry(key).or_default() += 1;
    }
}

/// `{LABEL="key"} count` lines of a labelled counter (none yet: no lines).
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_keeps_recent_boots_bounded() {
        let m = Arc::new(Metrics::default());
        m.request(200, 10);
        m.request(404, 0);
        {
            let _g = m.active(Gauge::Downloads);
            assert!(m.render().contains("mkimage_http_active_downloads 1\n"));
        }
        let text = m.render();
        assert!(
            text.contains("mkimage_http_requests_total{status=\"404\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("mkimage_http_sent_bytes_total 10\n"));
        assert!(text.contains("mkimage_http_active_downloads 0\n"));
        for i in 0..(RECENT_BOOTS + 5) {
            m.boot(Boot {
                time: i as u64,
                client: "c".into(),
                mac: None,
                profile: "p".into(),
            });
        }
        m.dhcp_reply("ipxe");
        m.dhcp_reply("ipxe");
        m.dhcp_dropped("truncated");
        m.dhcp_ignored();
        let text = m.render();
        assert!(
            text.contains("mkimage_dhcp_replies_total{client=\"ipxe\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("mkimage_dhcp_dropped_total{reason=\"truncated\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("mkimage_dhcp_ignored_total 1\n"), "{text}");
        let boots = m.recent_boots();
        assert_eq!(boots.len(), RECENT_BOOTS);
        assert_eq!(boots[0].time, (RECENT_BOOTS + 4) as u64);
    }
}
