//! The registry as people and programs read it: one summary per machine
//! (`GET /api/nodes`, `mkimage nodes --json`), a table (`mkimage nodes`),
//! a section of the status page and the per-stage gauge of `/metrics`.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::record::{Inventory, Record};
use super::stage::Stage;
use super::store::{read_all, NodeError, NODES};
use crate::artifact::utc;

/// What a listing shows of one machine.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub mac: String,
    pub ip: Option<String>,
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub cpus: Option<u32>,
    pub memory_kb: Option<u64>,
    pub disks: Option<usize>,
    pub disk_bytes: Option<u64>,
    pub nics: Option<usize>,
    pub profile: Option<String>,
    /// No profile selects it: it boots the default profile.
    pub new: bool,
    pub stage: Option<Stage>,
    /// Its latest boot's stages, in order.
    pub stages: Vec<Stage>,
    pub first_seen: u64,
    pub last_seen: u64,
    /// `STEP: REASON` of the last failure it reported.
    pub last_failure: Option<String>,
    pub last_failure_time: Option<u64>,
    /// Its BMC's LAN address and MAC, as the discovery overlay read them in-band.
    pub bmc_address: Option<String>,
    pub bmc_mac: Option<String>,
}

impl Summary {
    pub fn of(r: &Record) -> Summary {
        let inv = r.inventory.as_ref();
        let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Summary {
            mac: r.mac.clone(),
            ip: r.ip.clone(),
            vendor: inv.and_then(|i| nonempty(&i.system.vendor)),
            model: inv.and_then(|i| nonempty(&i.system.product)),
            serial: inv.and_then(|i| nonempty(&i.system.serial)),
            cpus: inv.map(|i| i.cpu.count),
            memory_kb: inv.map(|i| i.memory_kb),
            disks: inv.map(|i| i.disks.len()),
            disk_bytes: inv.map(|i| i.disks.iter().map(|d| d.size_bytes).sum()),
            nics: inv.map(|i| i.nics.len()),
            profile: r.profile.clone(),
            new: r.new,
            stage: r.stage,
            stages: r.stages.iter().map(|s| s.stage).collect(),
            first_seen: r.first_seen,
            last_seen: r.last_seen,
            last_failure: r.failure.as_ref().map(|f| match &f.step {
                Some(step) => format!("{step}: {}", f.reason),
                None => f.reason.clone(),
            }),
            last_failure_time: r.failure.as_ref().map(|f| f.time),
            bmc_address: bmc_field(inv, "address"),
            bmc_mac: bmc_field(inv, "mac"),
        }
    }
}

/// A text field of the inventory's `bmc` object (`mkimage-discovery`'s
/// `ipmitool lan print`), unless empty or all zeros.
fn bmc_field(inv: Option<&Inventory>, key: &str) -> Option<String> {
    inv.and_then(|i| i.other.get("bmc"))
        .and_then(|b| b.get(key))
        .and_then(|v| v.as_str())
        .filter(|v| !v.is_empty() && v.chars().any(|c| c.is_ascii_alphanumeric() && c != '0'))
        .map(str::to_string)
}

/// The machines recorded under the served dir `dir` (for `mkimage nodes`).
pub fn list(dir: &Path) -> Result<Vec<Summary>, NodeError> {
    Ok(read_all(&dir.join(NODES))?
        .iter()
        .map(Summary::of)
        .collect())
}

/// `{"nodes": [...]}`.
pub fn json(nodes: &[Summary]) -> String {
    serde_json::json!({ "nodes": nodes }).to_string()
}

const COLUMNS: [&str; 14] = [
    "MAC",
    "IP",
    "VENDOR",
    "MODEL",
    "SERIAL",
    "CPUS",
    "MEMORY",
    "DISKS",
    "NICS",
    "PROFILE",
    "STAGE",
    "LAST SEEN (UTC)",
    "LAST FAILURE",
    "BMC",
];

/// The cells of one row, in [`COLUMNS`] order.
fn cells(n: &Summary) -> Vec<String> {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let num = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    vec![
        n.mac.clone(),
        opt(&n.ip),
        opt(&n.vendor),
        opt(&n.model),
        opt(&n.serial),
        num(n.cpus.map(|c| c.to_string())),
        num(n.memory_kb.map(|k| format!("{} MiB", k / 1024))),
        num(n
            .disks
            .zip(n.disk_bytes)
            .map(|(d, b)| format!("{d} ({} GB)", b / 1_000_000_000))),
        num(n.nics.map(|c| c.to_string())),
        format!("{}{}", opt(&n.profile), if n.new { " (new)" } else { "" }),
        n.stage.map_or("-", Stage::name).to_string(),
        utc(n.last_seen),
        opt(&n.last_failure),
        match (&n.bmc_address, &n.bmc_mac) {
            (Some(a), Some(m)) => format!("{a} ({m})"),
            (Some(a), None) => a.clone(),
            (None, Some(m)) => m.clone(),
            (None, None) => "-".into(),
        },
    ]
}

/// An aligned text table, one machine a line.
pub fn table(nodes: &[Summary]) -> String {
    let mut rows: Vec<Vec<String>> = vec![COLUMNS.iter().map(|c| c.to_string()).collect()];
    rows.extend(nodes.iter().map(cells));
    let widths: Vec<usize> = (0..COLUMNS.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

/// The status page's section (`esc` escapes HTML).
pub fn html(nodes: &[Summary], esc: impl Fn(&str) -> String) -> String {
    let mut html = String::from("<h2>Nodes</h2>\n");
    if nodes.is_empty() {
        html.push_str("<p>No machine has fetched a boot script yet.</p>\n");
        return html;
    }
    html.push_str("<table><tr>");
    for c in COLUMNS {
        let _ = write!(html, "<th>{}</th>", esc(c));
    }
    html.push_str("</tr>\n");
    for n in nodes {
        html.push_str("<tr>");
        for c in cells(n) {
            let _ = write!(html, "<td>{}</td>", esc(&c));
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</table>\n");
    html
}

/// `mkimage_nodes{stage=…}`: machines by their latest stage (every stage listed).
pub fn metrics(records: &[Record]) -> String {
    let tallies: Vec<super::store::Tally> = records.iter().map(|r| (r.stage, r.new)).collect();
    metrics_of(&tallies)
}

/// `metrics`, from each record's latest stage and whether it is new.
pub fn metrics_of(records: &[super::store::Tally]) -> String {
    let mut out = String::from("# HELP mkimage_nodes Machines in the node registry, by the latest boot stage seen.\n# TYPE mkimage_nodes gauge\n");
    for stage in Stage::ALL {
        let n = records.iter().filter(|r| r.0 == Some(stage)).count();
        let _ = writeln!(out, "mkimage_nodes{{stage=\"{}\"}} {n}", stage.name());
    }
    let new = records.iter().filter(|r| r.1).count();
    let _ = writeln!(out, "# HELP mkimage_nodes_new Machines no profile selects (they boot the default).\n# TYPE mkimage_nodes_new gauge\nmkimage_nodes_new {new}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::nodes::record::{Failure, Inventory};

    #[test]
    fn summaries_tables_and_metrics() {
        let mut r = Record::new("52:54:00:12:34:56", 0);
        r.saw(Stage::Script, 1);
        r.saw(Stage::Failed, 2);
        r.failure = Some(Failure {
            time: 2,
            step: Some("download basefs".into()),
            reason: "sha256 mismatch".into(),
        });
        r.inventory = Some(Inventory::parse(br#"{"system":{"vendor":"QEMU"},"cpu":{"count":2},"memory_kb":2097152,"disks":[{"size_bytes":8000000000}]}"#).unwrap());
        let s = Summary::of(&r);
        assert_eq!(
            (s.vendor.as_deref(), s.cpus, s.disks, s.stages.len()),
            (Some("QEMU"), Some(2), Some(1), 2)
        );
        let text = table(std::slice::from_ref(&s));
        assert!(text.lines().next().unwrap().starts_with("MAC "), "{text}");
        assert!(
            text.contains("QEMU")
                && text.contains("2048 MiB")
                && text.contains("1 (8 GB)")
                && text.contains("download basefs: sha256 mismatch"),
            "{text}"
        );
        assert!(json(&[s]).contains("\"stage\":\"failed\""));
        let m = metrics(&[r]);
        assert!(
            m.contains("mkimage_nodes{stage=\"failed\"} 1\n")
                && m.contains("mkimage_nodes{stage=\"booted\"} 0\n"),
            "{m}"
        );
    }
}
