//! One machine's record as it is stored (`DIR/.state/nodes/MAC.json`) and
//! the inventory the discovery overlay posts, checked on the way in: typed
//! fields (a wrong type is an error naming the field), bounded lists, and
//! text without control characters, so a record always reads back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::stage::Stage;

/// The longest text field accepted in an inventory or a failure reason.
pub const MAX_TEXT: usize = 512;
const MAX_NICS: usize = 256;
const MAX_DISKS: usize = 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub mac: String,
    /// Seconds since the epoch.
    pub first_seen: u64,
    pub last_seen: u64,
    /// The address its last request came from.
    #[serde(default)]
    pub ip: Option<String>,
    /// The address its latest boot script went to (behind a trusted
    /// proxy, the address the proxy forwarded for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_ip: Option<String>,
    /// The profile its last boot script was made for.
    #[serde(default)]
    pub profile: Option<String>,
    /// No profile selects it (by MAC, facts or tag): it boots the default.
    #[serde(default)]
    pub new: bool,
    /// The furthest stage its latest boot reached (`failed` if it failed).
    #[serde(default)]
    pub stage: Option<Stage>,
    /// Boot scripts served to it.
    #[serde(default)]
    pub boots: u64,
    /// The stages of its latest boot, in boot order, each with when it was last seen.
    #[serde(default)]
    pub stages: Vec<Seen>,
    #[serde(default)]
    pub failure: Option<Failure>,
    #[serde(default)]
    pub inventory: Option<Inventory>,
    /// The inventory came with a valid boot token (`serve::tokens`): only
    /// then do its facts select a profile (`match:`). False in records
    /// written before tokens existed.
    #[serde(default)]
    pub inventory_authenticated: bool,
    /// Its power as an operator's command last saw it through the BMC.
    #[serde(default)]
    pub power: Option<Power>,
}

/// Power as `mkimage power`/`reprovision` last saw it (`serve::operator`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Power {
    /// `on` or `off`; `None` when the BMC did not say.
    pub state: Option<String>,
    /// Why the BMC could not be asked or did not do it (never a password).
    #[serde(default)]
    pub error: Option<String>,
    /// Seconds since the epoch.
    pub time: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seen {
    pub stage: Stage,
    /// Seconds since the epoch.
    pub time: u64,
    /// The same moment in milliseconds since the epoch, for time-to-ready
    /// (`bench/boot-time.sh`); 0 in records written before it was kept.
    #[serde(default)]
    pub ms: u64,
}

/// The last failure a machine reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub time: u64,
    /// The init's step that failed (e.g. `download basefs`), when it said.
    #[serde(default)]
    pub step: Option<String>,
    pub reason: String,
}

impl Record {
    pub fn new(mac: &str, now: u64) -> Record {
        Record {
            mac: mac.to_string(),
            first_seen: now,
            last_seen: now,
            ip: None,
            boot_ip: None,
            profile: None,
            new: false,
            stage: None,
            boots: 0,
            stages: Vec::new(),
            failure: None,
            inventory: None,
            inventory_authenticated: false,
            power: None,
        }
    }

    /// Note a stage: a boot script starts a new boot's list. The list is
    /// kept in boot order whatever order reports arrive in (the init sends
    /// them in the background, at once), one entry per stage.
    pub fn saw(&mut self, stage: Stage, now: u64) {
        self.saw_ms(stage, now * 1000);
    }

    /// `saw`, at `ms` milliseconds since the epoch.
    pub fn saw_ms(&mut self, stage: Stage, ms: u64) {
        let now = ms / 1000;
        if stage == Stage::Script {
            self.boots += 1;
            self.stages.clear();
        }
        match self.stages.iter_mut().find(|s| s.stage == stage) {
            Some(seen) => (seen.time, seen.ms) = (now, ms),
            None => {
                let at = self.stages.partition_point(|s| s.stage < stage);
                let seen = Seen {
                    stage,
                    time: now,
                    ms,
                };
                self.stages.insert(at, seen);
            }
        }
        self.stage = self.stages.last().map(|s| s.stage);
        self.last_seen = self.last_seen.max(now);
    }
}

/// What `mkimage-discovery` reports (provisioners/discovery); keys it does
/// not know are kept as they came.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    #[serde(default)]
    pub system: System,
    #[serde(default)]
    pub cpu: Cpu,
    #[serde(default)]
    pub memory_kb: u64,
    #[serde(default)]
    pub nics: Vec<Nic>,
    #[serde(default)]
    pub disks: Vec<Disk>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct System {
    #[serde(default)]
    pub vendor: String,
    /// The model (DMI product name).
    #[serde(default)]
    pub product: String,
    #[serde(default)]
    pub serial: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub count: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Nic {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub mac: String,
    #[serde(default)]
    pub driver: String,
    #[serde(default)]
    pub speed_mbps: i64,
    #[serde(default)]
    pub link: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub size_bytes: u64,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub rotational: bool,
}

impl Inventory {
    /// Parse and check a posted body: a JSON object of the discovery schema.
    pub fn parse(body: &[u8]) -> Result<Inventory, String> {
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
        if !value.is_object() {
            return Err(
                "the inventory must be a JSON object ({\"system\": {…}, \"cpu\": {…}, …})".into(),
            );
        }
        check_text(&value, "")?;
        let inv: Inventory = serde_path_to_error::deserialize(value)
            .map_err(|e| format!("{}: {}", e.path(), e.inner()))?;
        if inv.nics.len() > MAX_NICS || inv.disks.len() > MAX_DISKS {
            return Err(format!(
                "{} NICs and {} disks: at most {MAX_NICS} and {MAX_DISKS}",
                inv.nics.len(),
                inv.disks.len()
            ));
        }
        Ok(inv)
    }

    /// The value of an inventory fact a profile may match (`vendor`, `model`, `serial`).
    pub fn fact(&self, name: &str) -> Option<&str> {
        match name {
            "vendor" => Some(&self.system.vendor),
            "model" => Some(&self.system.product),
            "serial" => Some(&self.system.serial),
            _ => None,
        }
    }
}

/// Every string in `value` (keys too) is short text without control characters.
fn check_text(value: &serde_json::Value, at: &str) -> Result<(), String> {
    use serde_json::Value;
    match value {
        Value::String(s) => {
            text(s).map_err(|e| format!("{}: {e}", if at.is_empty() { "." } else { at }))
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| check_text(v, &format!("{at}[{i}]"))),
        Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            let at = if at.is_empty() {
                k.clone()
            } else {
                format!("{at}.{k}")
            };
            text(k).map_err(|e| format!("key {at}: {e}"))?;
            check_text(v, &at)
        }),
        _ => Ok(()),
    }
}

/// Text fit for a record: at most [`MAX_TEXT`] bytes, no control characters.
pub fn text(s: &str) -> Result<(), String> {
    if s.len() > MAX_TEXT {
        return Err(format!("{} bytes of text, at most {MAX_TEXT}", s.len()));
    }
    match s.chars().find(|c| c.is_control()) {
        Some(c) => Err(format!("contains the control character {c:?}")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inventories_are_checked() {
        let good = br#"{"system":{"vendor":"QEMU","product":"Standard PC","serial":""},"cpu":{"model":"x","count":2},"memory_kb":1000,"nics":[{"name":"ens3","mac":"52:54:00:12:34:56","driver":"virtio_net","speed_mbps":-1,"link":true}],"disks":[],"bmc":{"ip":"10.0.0.9"}}"#;
        let inv = Inventory::parse(good).unwrap();
        assert_eq!(
            (
                inv.fact("vendor"),
                inv.fact("model"),
                inv.cpu.count,
                inv.nics.len()
            ),
            (Some("QEMU"), Some("Standard PC"), 2, 1)
        );
        assert_eq!(inv.other["bmc"]["ip"], "10.0.0.9", "unknown keys are kept");
        for (bad, why) in [
            (&b"[1,2]"[..], "JSON object"),
            (b"{\"system\": ", "not JSON"),
            (b"{\"cpu\": {\"count\": \"two\"}}", "cpu.count"),
            (
                b"{\"system\": {\"vendor\": \"a\\u0007b\"}}",
                "system.vendor: contains the control character",
            ),
            (b"{\"nics\": {}}", "nics"),
        ] {
            let err = Inventory::parse(bad).unwrap_err();
            assert!(err.contains(why), "{}: {err}", String::from_utf8_lossy(bad));
        }
        let long = format!(
            "{{\"system\": {{\"serial\": \"{}\"}}}}",
            "x".repeat(MAX_TEXT + 1)
        );
        assert!(Inventory::parse(long.as_bytes())
            .unwrap_err()
            .contains("at most"));
    }

    #[test]
    fn stages_keep_milliseconds_for_time_to_ready() {
        let mut r = Record::new("52:54:00:00:00:01", 1);
        r.saw_ms(Stage::Script, 1_000_250);
        r.saw_ms(Stage::Booted, 1_031_900);
        let seen: Vec<_> = r.stages.iter().map(|s| (s.time, s.ms)).collect();
        assert_eq!(seen, [(1000, 1_000_250), (1031, 1_031_900)]);
        let old: Seen = serde_json::from_str(r#"{"stage": "booted", "time": 5}"#).unwrap();
        assert_eq!((old.time, old.ms), (5, 0));
    }

    #[test]
    fn stages_are_kept_in_boot_order_and_start_over_with_each_boot_script() {
        let mut r = Record::new("52:54:00:00:00:01", 1);
        for (t, s) in [
            (1, Stage::Script),
            (2, Stage::Kernel),
            (3, Stage::Kernel),
            (4, Stage::Mounted),
            (4, Stage::Verified),
            (5, Stage::Booted),
        ] {
            r.saw(s, t);
        }
        let seen = |r: &Record| {
            r.stages
                .iter()
                .map(|s| (s.stage, s.time))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            seen(&r),
            [
                (Stage::Script, 1),
                (Stage::Kernel, 3),
                (Stage::Verified, 4),
                (Stage::Mounted, 4),
                (Stage::Booted, 5)
            ]
        );
        assert_eq!(r.stage, Some(Stage::Booted));
        r.saw(Stage::Network, 6);
        assert_eq!(
            r.stage,
            Some(Stage::Booted),
            "the furthest stage, not the last report"
        );
        r.saw(Stage::Script, 9);
        assert_eq!(
            (r.boots, seen(&r), r.stage, r.last_seen),
            (2, vec![(Stage::Script, 9)], Some(Stage::Script), 9)
        );
        for t in 0..100 {
            r.saw(
                if t % 2 == 0 {
                    Stage::Network
                } else {
                    Stage::Download
                },
                10 + t,
            );
        }
        assert_eq!(r.stages.len(), 3, "one entry per stage");
    }
}
