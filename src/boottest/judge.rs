//! The verdict of a boot: its own failure first, then each assertion,
//! then what the host saw of its path.

use std::time::Duration;

use anyhow::bail;

use super::checks::{self, Expect};
use super::{lab, vm};

/// The verdict from the console: the boot's own failure first, then each
/// assertion, then what the host saw (`host`).
pub(super) fn judge(
    expect: &[Expect],
    log: &str,
    host: Vec<lab::Verdict>,
    stop: vm::Stop,
    timeout: Duration,
    elapsed: f64,
) -> anyhow::Result<()> {
    // What the host saw of the boot's path goes with every failure: it shows where the boot stopped.
    let seen: String = host
        .iter()
        .map(|(what, v)| format!("{}\n", verdict_line(what, v)))
        .collect();
    let tail = || {
        format!(
            "{}{}",
            vm::tail(log, 40),
            if seen.is_empty() {
                String::new()
            } else {
                format!("\nthe boot's path, as the host saw it:\n{seen}")
            }
        )
    };
    if let Some(line) = log
        .lines()
        .find(|l| l.contains("mkimage-init: FAILED") || l.contains("Kernel panic"))
    {
        bail!(
            "boot-test: the boot failed after {elapsed:.0}s: {}\nconsole tail:\n{}",
            line.trim(),
            tail()
        );
    }
    match stop {
        vm::Stop::Done => {}
        vm::Stop::Timeout => bail!(
            "boot-test: no result within {}s (the checks never finished)\nconsole tail:\n{}",
            timeout.as_secs(),
            tail()
        ),
        vm::Stop::Exited(how) => bail!(
            "boot-test: QEMU exited ({how}) before the checks finished\nconsole tail:\n{}",
            tail()
        ),
    }
    let mut verdicts = checks::judge(expect, log);
    verdicts.extend(host);
    for (what, v) in &verdicts {
        println!("{}", verdict_line(what, v));
    }
    let failed: Vec<String> = verdicts
        .iter()
        .filter_map(|(what, v)| v.as_ref().err().map(|why| format!("{what}: {why}")))
        .collect();
    if !failed.is_empty() {
        bail!(
            "boot-test: {} of {} assertions failed: {}\nconsole tail:\n{}",
            failed.len(),
            verdicts.len(),
            failed.join("; "),
            tail()
        );
    }
    println!(
        "boot-test: {} assertions passed in {elapsed:.0}s",
        verdicts.len()
    );
    Ok(())
}

fn verdict_line(what: &str, verdict: &Result<(), String>) -> String {
    format!("{} {what}", if verdict.is_ok() { "PASS" } else { "FAIL" })
}
