//! One machine's last boot as a timeline: a bar per stage, from `script`
//! to `booted`, as long as the machine stayed in that stage (until the next
//! one was seen), the failed step in red. The same picture as text
//! (`mkimage nodes NODE`) and as HTML (the status page's live section),
//! with its power as last seen through the BMC and its last failure.

use std::fmt::Write as _;

use super::record::{Record, Seen};
use super::stage::Stage;
use crate::artifact::utc;

/// A stage of the last boot: when it began (ms after `script`) and how
/// long until the next stage (`None` for the last one seen).
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub stage: Stage,
    pub start_ms: u64,
    pub len_ms: Option<u64>,
}

/// The bars of a record's last boot, in boot order.
pub fn bars(r: &Record) -> Vec<Bar> {
    let at = |s: &Seen| if s.ms > 0 { s.ms } else { s.time * 1000 };
    let Some(first) = r.stages.first().map(at) else {
        return Vec::new();
    };
    r.stages
        .iter()
        .enumerate()
        .map(|(i, s)| Bar {
            stage: s.stage,
            start_ms: at(s).saturating_sub(first),
            len_ms: r.stages.get(i + 1).map(|n| at(n).saturating_sub(at(s))),
        })
        .collect()
}

fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// `on (UTC time)`, `off (…)`, `unknown: WHY (…)` or `-`.
pub fn power(r: &Record) -> String {
    match &r.power {
        None => "-".into(),
        Some(p) => {
            let state = p.state.as_deref().unwrap_or("unknown");
            match &p.error {
                Some(e) => format!("{state}, {e} ({} UTC)", utc(p.time)),
                None => format!("{state} ({} UTC)", utc(p.time)),
            }
        }
    }
}

fn failure(r: &Record) -> Option<String> {
    r.failure.as_ref().map(|f| {
        let what = match &f.step {
            Some(step) => format!("{step}: {}", f.reason),
            None => f.reason.clone(),
        };
        format!("{} UTC, {what}", utc(f.time))
    })
}

/// The text form (`name`: the inventory's name for the MAC, if any).
pub fn text(r: &Record, name: Option<&str>) -> String {
    let mut out = String::new();
    let title = match name {
        Some(n) => format!("{n} ({})", r.mac),
        None => r.mac.clone(),
    };
    let _ = writeln!(
        out,
        "{title}\n  profile {}, stage {}, power {}",
        r.profile.as_deref().unwrap_or("-"),
        r.stage.map_or("-", Stage::name),
        power(r)
    );
    let bars = bars(r);
    let total = bars.last().map_or(0, |b| b.start_ms);
    match r.stages.first() {
        None => out.push_str("  no boot seen yet\n"),
        Some(first) => {
            let _ = writeln!(
                out,
                "  last boot: {} UTC, {} from script to {}",
                utc(first.time),
                secs(total),
                bars.last().map_or("-", |b| b.stage.name())
            );
        }
    }
    const WIDTH: u64 = 40;
    for b in &bars {
        let (lead, len) = match total {
            0 => (0, 0),
            t => (b.start_ms * WIDTH / t, b.len_ms.unwrap_or(0) * WIDTH / t),
        };
        let mark = if b.stage == Stage::Failed { 'x' } else { '#' };
        let bar: String = " ".repeat(lead as usize) + &mark.to_string().repeat(len.max(1) as usize);
        let took = match (b.stage, b.len_ms) {
            (Stage::Failed, _) => "FAILED".to_string(),
            (_, Some(ms)) => secs(ms),
            (_, None) => "(last seen)".to_string(),
        };
        let _ = writeln!(
            out,
            "  {:<12} +{:>7}  {:<w$}  {took}",
            b.stage.name(),
            secs(b.start_ms),
            bar,
            w = WIDTH as usize + 1
        );
    }
    if let Some(f) = failure(r) {
        let _ = writeln!(out, "  last failure: {f}");
    }
    out
}

/// The HTML form: a block per machine (`esc` escapes text).
pub fn html(r: &Record, name: Option<&str>, esc: &dyn Fn(&str) -> String) -> String {
    let mut h = String::new();
    let title = match name {
        Some(n) => format!("{} <code>{}</code>", esc(n), esc(&r.mac)),
        None => format!("<code>{}</code>", esc(&r.mac)),
    };
    let stage = r.stage.map_or("-", Stage::name);
    let _ = writeln!(
        h,
        "<div class=\"node\" data-mac=\"{}\" data-name=\"{}\"><h3>{title}</h3>\n<p>power <b class=\"power\">{}</b> · stage <b class=\"stage\" data-stage=\"{}\">{}</b> · profile <code>{}</code></p>",
        esc(&r.mac),
        esc(name.unwrap_or(&r.mac)),
        esc(&power(r)),
        stage,
        stage,
        esc(r.profile.as_deref().unwrap_or("-"))
    );
    let bars = bars(r);
    let total = bars.last().map_or(0, |b| b.start_ms).max(1);
    if !bars.is_empty() {
        h.push_str("<div class=\"timeline\">\n");
        for b in &bars {
            let left = b.start_ms as f64 * 100.0 / total as f64;
            let width = (b.len_ms.unwrap_or(0) as f64 * 100.0 / total as f64).max(0.5);
            let failed = b.stage == Stage::Failed;
            let label = match (failed, &r.failure, b.len_ms) {
                (true, Some(f), _) => format!("failed: {}", f.step.as_deref().unwrap_or(&f.reason)),
                (true, None, _) => "failed".into(),
                (false, _, Some(ms)) => secs(ms),
                (false, _, None) => format!("at {}", secs(b.start_ms)),
            };
            let _ = writeln!(
                h,
                "<div class=\"row\"><span class=\"name\">{}</span><span class=\"track\"><span class=\"bar{}\" style=\"margin-left:{left:.1}%;width:{width:.1}%\"></span></span><span class=\"len\">{}</span></div>",
                b.stage.name(),
                if failed { " failed" } else { "" },
                esc(&label)
            );
        }
        h.push_str("</div>\n");
    }
    if let Some(f) = failure(r) {
        let _ = writeln!(h, "<p class=\"failure\">last failure: {}</p>", esc(&f));
    }
    h.push_str("</div>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::nodes::record::{Failure, Power};

    fn record() -> Record {
        let mut r = Record::new("52:54:00:12:34:56", 0);
        r.saw_ms(Stage::Script, 1_000_000);
        r.saw_ms(Stage::Kernel, 1_002_000);
        r.saw_ms(Stage::Initrd, 1_003_000);
        r.saw_ms(Stage::Network, 1_006_000);
        r.saw_ms(Stage::Failed, 1_010_000);
        r.failure = Some(Failure {
            time: 1010,
            step: Some("download basefs".into()),
            reason: "sha256 mismatch".into(),
        });
        r.power = Some(Power {
            state: Some("on".into()),
            error: None,
            time: 999,
        });
        r
    }

    #[test]
    fn bars_last_until_the_next_stage() {
        let b = bars(&record());
        assert_eq!(b.len(), 5);
        assert_eq!((b[0].start_ms, b[0].len_ms), (0, Some(2000)));
        assert_eq!((b[3].stage, b[3].len_ms), (Stage::Network, Some(4000)));
        assert_eq!(
            (b[4].stage, b[4].start_ms, b[4].len_ms),
            (Stage::Failed, 10_000, None)
        );
    }

    #[test]
    fn text_and_html_show_the_failed_step() {
        let r = record();
        let t = text(&r, Some("node07"));
        assert!(
            t.starts_with("node07 (52:54:00:12:34:56)\n  profile -, stage failed, power on ("),
            "{t}"
        );
        assert!(t.contains("10.0 s from script to failed"), "{t}");
        assert!(
            t.contains("network") && t.contains("4.0 s") && t.contains("FAILED"),
            "{t}"
        );
        assert!(
            t.contains("last failure: ") && t.contains("download basefs: sha256 mismatch"),
            "{t}"
        );
        let h = html(&r, None, &|s: &str| s.replace('<', "&lt;"));
        assert!(
            h.contains("class=\"bar failed\"") && h.contains("failed: download basefs"),
            "{h}"
        );
        assert!(h.contains("data-stage=\"failed\""), "{h}");
        assert!(text(&Record::new("52:54:00:00:00:01", 0), None).contains("no boot seen yet"));
    }
}
