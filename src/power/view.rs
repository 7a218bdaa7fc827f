//! What a running reprovision shows: on a terminal, one live line per node
//! (indicatif) with its current step or stage; otherwise one plain line per
//! change (`node07: kernel`), which logs and CI read well.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub trait View: Sync {
    /// `node` is at a new step or stage.
    fn stage(&self, node: &str, what: &str);
    /// `node` is done (`line` says how).
    fn done(&self, node: &str, ok: bool, line: &str);
}

/// Live lines on a terminal (stderr), plain lines on stdout otherwise.
pub fn for_nodes(names: &[String]) -> Box<dyn View> {
    if std::io::stderr().is_terminal() {
        Box::new(Live::new(names))
    } else {
        Box::new(Plain)
    }
}

/// One line per change, on stdout.
pub struct Plain;

impl View for Plain {
    fn stage(&self, node: &str, what: &str) {
        println!("{node}: {what}");
    }

    fn done(&self, _node: &str, _ok: bool, line: &str) {
        println!("{line}");
    }
}

/// One line per node, redrawn in place.
pub struct Live {
    bars: Mutex<HashMap<String, ProgressBar>>,
    _multi: MultiProgress,
}

impl Live {
    fn new(names: &[String]) -> Live {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let width = names.iter().map(|n| n.len()).max().unwrap_or(4);
        let style =
            ProgressStyle::with_template(&format!("{{prefix:<{width}}} {{spinner}} {{wide_msg}}"))
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let bars = names
            .iter()
            .map(|n| {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(style.clone());
                bar.set_prefix(n.clone());
                bar.set_message("waiting");
                bar.enable_steady_tick(std::time::Duration::from_millis(200));
                (n.clone(), bar)
            })
            .collect();
        Live {
            bars: Mutex::new(bars),
            _multi: multi,
        }
    }
}

impl View for Live {
    fn stage(&self, node: &str, what: &str) {
        if let Some(bar) = self
            .bars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
        {
            bar.set_message(what.to_string());
        }
    }

    fn done(&self, node: &str, ok: bool, line: &str) {
        if let Some(bar) = self
            .bars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
        {
            let mark = if ok { "ok" } else { "FAILED" };
            let what = line.split_once(": ").map_or(line, |(_, rest)| rest);
            bar.finish_with_message(format!("{mark}: {what}"));
        }
    }
}
