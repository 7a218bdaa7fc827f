//! Boot-test assertions: declared in the boot config (`boot_test.expect`),
//! turned into a shell script the booted machine runs (brought by the
//! checker overlay, see `checker`), and judged from what that script and the
//! machine print on the serial console.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::exec::shell_quote;

/// One assertion.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, untagged)]
pub enum Expect {
    /// A regular expression some serial console line matches.
    Console { console: String },
    /// `systemctl is-active UNIT` says `active`.
    UnitActive { unit_active: String },
    /// The path exists in the booted root.
    FileExists { file_exists: String },
    /// The kernel module is loaded (or built in).
    ModuleLoaded { module_loaded: String },
    /// The command exits 0 and (if given) its output matches the regex.
    Command {
        command: String,
        matches: Option<String>,
    },
    /// The machine is ready (`mkimage-booted.service` done, or
    /// `multi-user.target` where nothing reports) within this many seconds
    /// of `basic.target`; else the verdict names what held it.
    Ready { ready_within: u64 },
    /// UEFI Secure Boot is (`true`) or is not enabled: the `SecureBoot`
    /// EFI variable the booted kernel sees.
    SecureBoot { secure_boot: bool },
    /// The kernel is locked down (`/sys/kernel/security/lockdown` shows
    /// `[integrity]` or `[confidentiality]`), as Debian's kernel does by
    /// itself under Secure Boot.
    Lockdown { lockdown: bool },
}

/// The `SecureBoot` EFI variable (4 attribute bytes, then 1 when enabled).
const SECURE_BOOT_VAR: &str =
    "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// The kernel's lockdown state, the active one in brackets.
const LOCKDOWN: &str = "/sys/kernel/security/lockdown";

impl Expect {
    pub fn describe(&self) -> String {
        match self {
            Expect::Console { console } => format!("console matches /{console}/"),
            Expect::UnitActive { unit_active } => format!("unit {unit_active} is active"),
            Expect::FileExists { file_exists } => format!("file {file_exists} exists"),
            Expect::ModuleLoaded { module_loaded } => format!("module {module_loaded} is loaded"),
            Expect::Command {
                command,
                matches: Some(re),
            } => format!("`{command}` succeeds and prints /{re}/"),
            Expect::Command {
                command,
                matches: None,
            } => format!("`{command}` succeeds"),
            Expect::Ready { ready_within } => {
                format!("booted within {ready_within} s of basic.target")
            }
            Expect::SecureBoot { secure_boot: true } => {
                "Secure Boot enabled in the booted system (the SecureBoot EFI variable is 1)".into()
            }
            Expect::SecureBoot { secure_boot: false } => {
                "Secure Boot disabled in the booted system".into()
            }
            Expect::Lockdown { lockdown: true } => {
                format!("kernel lockdown on: {LOCKDOWN} shows [integrity] or [confidentiality]")
            }
            Expect::Lockdown { lockdown: false } => {
                format!("kernel lockdown off: {LOCKDOWN} shows [none]")
            }
        }
    }

    /// Check the regexes up front, so a typo fails before a 5-minute boot.
    pub fn validate(&self) -> Result<(), String> {
        let re = match self {
            Expect::Console { console } => Some(console),
            Expect::Command { matches, .. } => matches.as_ref(),
            _ => None,
        };
        match re {
            Some(re) => regex::Regex::new(re)
                .map(|_| ())
                .map_err(|e| format!("{}: {e}", self.describe())),
            None => Ok(()),
        }
    }
}

/// The marker every line the check script prints starts with.
pub const MARK: &str = "mkimage-check:";

/// The checks' shell functions (`report`, `ready`): data, not code.
const PRELUDE: &str = include_str!("../../boottest/check-prelude.sh");

/// The script the guest runs: one block per in-guest assertion, each
/// printing `mkimage-check: N out LINE` lines and `mkimage-check: N exit RC`,
/// then `mkimage-check: done`.
pub fn script(expect: &[Expect]) -> String {
    let mut s = String::from(PRELUDE);
    for (n, e) in expect.iter().enumerate() {
        let body = match e {
            Expect::Console { .. } => continue,
            Expect::UnitActive { unit_active } => format!(
                "for i in $(seq 1 120); do s=$(systemctl is-active {u} 2>&1); [ \"$s\" = activating ] || break; sleep 1; done; report {n} 0 \"$s\"",
                u = shell_quote(unit_active)
            ),
            Expect::FileExists { file_exists } => format!("test -e {p}; report {n} $? \"\"", p = shell_quote(file_exists)),
            Expect::ModuleLoaded { module_loaded } => {
                format!("test -d /sys/module/{m}; report {n} $? \"\"", m = shell_quote(&module_loaded.replace('-', "_")))
            }
            Expect::Ready { ready_within } => format!("ready {n} {ready_within}"),
            Expect::SecureBoot { .. } => format!("v=$(tail -c 1 {SECURE_BOOT_VAR} | od -An -tu1 | tr -d ' '); report {n} 0 \"SecureBoot=${{v:-absent}}\""),
            Expect::Lockdown { .. } => format!("out=$(cat {LOCKDOWN} 2>&1); report {n} $? \"$out\""),
            Expect::Command { command, .. } => format!("out=$(sh -c {c} 2>&1); report {n} $? \"$out\"", c = shell_quote(command)),
        };
        s.push_str(&body);
        s.push('\n');
    }
    s.push_str("echo \"mkimage-check: done\"\n");
    s
}

/// What the guest reported for one assertion.
#[derive(Debug, Default, Clone)]
pub struct Reported {
    pub output: Vec<String>,
    pub exit: Option<i32>,
}

/// Parse the check lines out of a serial log (they may follow other text on
/// a line; console output is not always clean).
pub fn parse(log: &str) -> (BTreeMap<usize, Reported>, bool) {
    let mut out: BTreeMap<usize, Reported> = BTreeMap::new();
    let mut done = false;
    for line in log.lines() {
        let Some(at) = line.find(MARK) else { continue };
        let rest = line[at + MARK.len()..].trim_start().trim_end_matches('\r');
        if rest == "done" {
            done = true;
            continue;
        }
        let mut words = rest.splitn(3, ' ');
        let (Some(n), Some(kind)) = (
            words.next().and_then(|n| n.parse::<usize>().ok()),
            words.next(),
        ) else {
            continue;
        };
        let r = out.entry(n).or_default();
        match kind {
            "out" => r.output.push(words.next().unwrap_or("").to_string()),
            "exit" => r.exit = words.next().and_then(|c| c.trim().parse().ok()),
            _ => {}
        }
    }
    (out, done)
}

/// Judge every assertion: `Err(reason)` for the ones that failed.
pub fn judge(expect: &[Expect], log: &str) -> Vec<(String, Result<(), String>)> {
    let (reported, _) = parse(log);
    expect
        .iter()
        .enumerate()
        .map(|(n, e)| {
            let verdict = match e {
                Expect::Console { console } => match regex::Regex::new(console) {
                    Ok(re) if log.lines().any(|l| re.is_match(l)) => Ok(()),
                    Ok(_) => Err("no console line matches".to_string()),
                    Err(err) => Err(err.to_string()),
                },
                other => match reported.get(&n) {
                    None => Err("the machine never reported this check".to_string()),
                    Some(r) => judge_reported(other, r),
                },
            };
            (e.describe(), verdict)
        })
        .collect()
}

fn judge_reported(e: &Expect, r: &Reported) -> Result<(), String> {
    let text = r.output.join("\n");
    match (e, r.exit) {
        (_, None) => Err("no exit status reported".into()),
        (Expect::UnitActive { .. }, _) if text.trim() == "active" => Ok(()),
        (Expect::UnitActive { .. }, _) => {
            Err(format!("systemctl is-active says `{}`", text.trim()))
        }
        (Expect::Command { matches, .. }, Some(0)) => match matches {
            None => Ok(()),
            Some(re) => match regex::Regex::new(re) {
                Ok(re) if re.is_match(&text) => Ok(()),
                Ok(_) => Err(format!("output does not match: {}", text.trim())),
                Err(err) => Err(err.to_string()),
            },
        },
        (Expect::Command { .. }, Some(rc)) => Err(format!("exit status {rc}: {}", text.trim())),
        (Expect::Ready { .. }, Some(rc)) if rc != 0 => Err(text.trim().to_string()),
        (Expect::SecureBoot { secure_boot }, _) => {
            match (text.trim() == "SecureBoot=1") == *secure_boot {
                true => Ok(()),
                false => Err(format!("the guest says {}", text.trim())),
            }
        }
        (Expect::Lockdown { lockdown }, Some(0)) => {
            let on = text.contains("[integrity]") || text.contains("[confidentiality]");
            match on == *lockdown {
                true => Ok(()),
                false => Err(format!("{LOCKDOWN}: {}", text.trim())),
            }
        }
        (_, Some(0)) => Ok(()),
        (_, Some(rc)) => Err(format!("check exited {rc}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expects() -> Vec<Expect> {
        serde_yaml_ng::from_str(
            "- console: 'mkimage-discovery: \\{'\n- unit_active: mkimage-discovery.service\n- file_exists: /etc/hostname\n- module_loaded: overlay\n- command: lshw -version\n  matches: 'B\\.0'\n",
        )
        .unwrap()
    }

    #[test]
    fn parses_each_kind() {
        let e = expects();
        assert!(matches!(e[0], Expect::Console { .. }));
        assert!(matches!(e[4], Expect::Command { .. }));
        assert!(serde_yaml_ng::from_str::<Vec<Expect>>("- unit_actve: x\n").is_err());
    }

    #[test]
    fn script_runs_and_is_judged() {
        let e = vec![
            Expect::FileExists {
                file_exists: "/".into(),
            },
            Expect::Command {
                command: "echo 'it''s B.02.19'".into(),
                matches: Some(r"B\.0".into()),
            },
            Expect::Command {
                command: "exit 3".into(),
                matches: None,
            },
            Expect::FileExists {
                file_exists: "/nonexistent x".into(),
            },
            Expect::Console {
                console: r"\] booted".into(),
            },
        ];
        let out = crate::exec::Cmd::new("sh")
            .args(["-c", &script(&e)])
            .run()
            .unwrap()
            .stdout;
        let log = format!("[  1.0] booted ok\n{out}");
        assert!(parse(&log).1, "{log}");
        let verdicts = judge(&e, &log);
        assert!(verdicts[0].1.is_ok());
        assert!(verdicts[1].1.is_ok(), "{verdicts:?}");
        assert!(verdicts[2]
            .1
            .as_ref()
            .unwrap_err()
            .contains("exit status 3"));
        assert!(verdicts[3].1.is_err());
        assert!(verdicts[4].1.is_ok());
    }

    #[test]
    fn readiness_fails_with_what_held_it() {
        let e: Vec<Expect> = serde_yaml_ng::from_str("- ready_within: 30\n").unwrap();
        assert_eq!(e, [Expect::Ready { ready_within: 30 }]);
        assert!(script(&e).contains("\nready 0 30\n"));
        let log =
            "mkimage-check: 0 out mkimage-booted.service 115 s after basic.target; what held it:\n\
                   mkimage-check: 0 out mkimage-booted.service +1s\n\
                   mkimage-check: 0 out `-systemd-networkd-wait-online.service @35s +2min\n\
                   mkimage-check: 0 exit 1\n";
        let verdict = judge(&e, log).remove(0).1.unwrap_err();
        assert!(
            verdict.contains("115 s")
                && verdict.contains("systemd-networkd-wait-online.service @35s"),
            "{verdict}"
        );
        let ok = "mkimage-check: 0 out mkimage-booted.service 3 s after basic.target\nmkimage-check: 0 exit 0\n";
        assert!(judge(&e, ok)[0].1.is_ok());
    }

    #[test]
    fn secure_boot_and_lockdown_are_judged_from_the_guest() {
        let e = vec![
            Expect::SecureBoot { secure_boot: true },
            Expect::Lockdown { lockdown: true },
        ];
        let ok = "mkimage-check: 0 out SecureBoot=1\nmkimage-check: 0 exit 0\nmkimage-check: 1 out none [integrity] confidentiality\nmkimage-check: 1 exit 0\n";
        assert!(judge(&e, ok).iter().all(|(_, v)| v.is_ok()));
        let off = "mkimage-check: 0 out SecureBoot=0\nmkimage-check: 0 exit 0\nmkimage-check: 1 out [none] integrity confidentiality\nmkimage-check: 1 exit 0\n";
        let v = judge(&e, off);
        assert_eq!(v[0].1, Err("the guest says SecureBoot=0".into()));
        assert!(v[1].1.as_ref().unwrap_err().contains("[none]"));
        assert!(v[0].0.starts_with("Secure Boot enabled"));
        assert!(script(&e).contains("SecureBoot-8be4df61"));
    }

    #[test]
    fn noisy_console_lines_still_parse() {
        let (r, done) = parse("[ 9.1] foo mkimage-check: 2 out active\r\nmkimage-check: 2 exit 0\nmkimage-check: done\n");
        assert!(done);
        assert_eq!(r[&2].output, ["active"]);
        assert_eq!(r[&2].exit, Some(0));
    }
}
