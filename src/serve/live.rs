//! The status page's live section: per machine its power as last seen
//! through the BMC, its current stage, its last boot as a timeline
//! (`nodes::timeline`) and its last failure. The page polls
//! `/status/nodes` every second and swaps the section in, so a boot is
//! watched as it goes; without JavaScript the page still shows it as of
//! the moment it was loaded.

use std::fmt::Write as _;

use super::nodes::timeline;
use super::state::State;
use crate::inventory::Lab;

const STYLE: &str = "<style>.node h3{margin:12px 0 2px}.timeline{max-width:720px}.row{display:flex;align-items:center;font-size:85%}\
.row .name{width:90px}.row .track{flex:1;background:#eee;height:12px;margin:1px 8px}.row .bar{display:block;height:12px;background:#4a8}\
.row .bar.failed{background:#d33}.row .len{width:180px}.failure{color:#b00}</style>\n";

/// Polls the section every second; the page's title says each machine's
/// stage (`mkimage serve: node07 booted, …`), for tabs and for tests.
const SCRIPT: &str = "<script>(function(){var live=document.getElementById('live-nodes');\
function title(){var parts=[];live.querySelectorAll('.node').forEach(function(n){var s=n.querySelector('.stage');\
parts.push(n.dataset.name+' '+(s?s.dataset.stage:'-'));});document.title='mkimage serve: '+parts.join(', ');}\
title();setInterval(function(){fetch('/status/nodes',{cache:'no-store'}).then(function(r){return r.ok?r.text():null})\
.then(function(t){if(t!==null){live.innerHTML=t;title();}}).catch(function(){});},1000);})();</script>\n";

/// The section with its style and the polling script.
pub fn section(state: &State, esc: fn(&str) -> String) -> String {
    format!(
        "<h2>Machines, live</h2>\n{STYLE}<div id=\"live-nodes\">\n{}</div>\n{SCRIPT}",
        fragment(state, esc)
    )
}

/// What goes inside the section: one block per machine.
pub fn fragment(state: &State, esc: fn(&str) -> String) -> String {
    let records = match state.nodes.all() {
        Ok(r) => r,
        Err(e) => return format!("<p>{}</p>\n", esc(&e.to_string())),
    };
    if records.is_empty() {
        return "<p>No machine has fetched a boot script yet.</p>\n".into();
    }
    // Names from the boot config's inventory, when it has one and it reads.
    let lab = state
        .boot_config
        .as_deref()
        .and_then(|p| Lab::load(p).ok())
        .unwrap_or_default();
    let mut html = String::new();
    for r in &records {
        let name = lab.by_mac(&r.mac).map(|(n, _)| n);
        let _ = write!(html, "{}", timeline::html(r, name, &esc));
    }
    html
}
