//! `mkimage reprovision` and `mkimage power`, node by node, a bounded
//! number at a time. A reprovision is four named steps per node:
//! `next_boot_profile` (the registry), `boot_from_network` and
//! `power_cycle_or_on` (the BMC), then `follow` (the registry, until the
//! stage asked for). A node that fails says at which stage and why — an
//! init step that failed, a BMC error, or the time running out — and the
//! others carry on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::bmc::{Action, Bmc, BmcError, PowerState};
use super::connect;
use super::credentials::Credentials;
use super::registry::Registry;
use super::targets::Target;
use super::view::View;
use crate::serve::nodes::{Record, Stage};

/// What `mkimage reprovision` was asked, resolved.
#[derive(Debug, Clone)]
pub struct Request {
    pub targets: Vec<Target>,
    /// The profile for the next boot (`None`: the boot config's selection).
    pub profile: Option<String>,
    /// The profile is for one boot only (else until changed).
    pub once: bool,
    /// Follow each node until it reaches this stage.
    pub wait: Stage,
    pub timeout: Duration,
    pub parallel: usize,
    pub bmc_timeout: Duration,
}

/// Why a node did not get there.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// Before any BMC was asked: no `bmc:`, no credentials, the registry.
    Setup(String),
    /// The BMC, at a step.
    Bmc {
        step: &'static str,
        error: String,
    },
    /// The machine reported a failure (the init's step and reason).
    Boot {
        step: Option<String>,
        reason: String,
    },
    Timeout {
        after: Duration,
    },
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Setup(why) => write!(f, "{why}"),
            Failure::Bmc { step, error } => write!(f, "{step}: {error}"),
            Failure::Boot {
                step: Some(step),
                reason,
            } => write!(f, "init failed at `{step}`: {reason}"),
            Failure::Boot { step: None, reason } => write!(f, "the boot failed: {reason}"),
            Failure::Timeout { after } => write!(f, "timed out after {}s", after.as_secs()),
        }
    }
}

/// One node's result.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub name: String,
    pub mac: String,
    /// The furthest stage its new boot reached.
    pub reached: Option<Stage>,
    pub failure: Option<Failure>,
}

impl Outcome {
    /// `node07: ok, at booted` or `node07: FAILED at stage kernel: …`.
    pub fn line(&self) -> String {
        let stage = self.reached.map_or("none", Stage::name);
        match &self.failure {
            None => format!("{}: ok, at {stage}", self.name),
            Some(f) => format!("{}: FAILED at stage {stage}: {f}", self.name),
        }
    }
}

/// Run `each` over `items`, at most `parallel` at a time; results in order.
pub fn bounded<T: Sync, R: Send>(
    items: &[T],
    parallel: usize,
    each: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..parallel.clamp(1, items.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(item) = items.get(i) else { break };
                let r = each(item);
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect()
}

pub fn run(
    req: &Request,
    credentials: Option<&Credentials>,
    registry: &Registry,
    view: &dyn View,
) -> Vec<Outcome> {
    bounded(&req.targets, req.parallel, |t| {
        let outcome = one(req, t, credentials, registry, view);
        view.done(&t.name, outcome.failure.is_none(), &outcome.line());
        outcome
    })
}

fn one(
    req: &Request,
    t: &Target,
    credentials: Option<&Credentials>,
    registry: &Registry,
    view: &dyn View,
) -> Outcome {
    let mut out = Outcome {
        name: t.name.clone(),
        mac: t.node.mac.clone(),
        reached: None,
        failure: None,
    };
    let bmc = match connect(&t.name, &t.node, credentials, req.bmc_timeout) {
        Ok(b) => b,
        Err(e) => {
            out.failure = Some(Failure::Setup(e));
            return out;
        }
    };
    let before = match registry.record(&t.node.mac) {
        Ok(r) => r.map_or(0, |r| r.boots),
        Err(e) => {
            out.failure = Some(Failure::Setup(format!("cannot read its node record: {e}")));
            return out;
        }
    };
    if let Some(profile) = &req.profile {
        view.stage(&t.name, &format!("next boot: profile {profile}"));
        if let Err(e) = registry.set_next_boot(&t.node.mac, profile, req.once) {
            out.failure = Some(Failure::Setup(format!("next_boot_profile: {e}")));
            return out;
        }
    }
    if let Err(f) = boot_and_power(bmc.as_ref(), &t.name, &t.node.mac, registry, view) {
        // The machine was not rebooted: its next boot, whenever it comes, is the boot config's again.
        if req.profile.is_some() {
            if let Err(e) = registry.clear_next_boot(&t.node.mac) {
                tracing::warn!("{}: {e}", t.name);
            }
        }
        out.failure = Some(f);
        return out;
    }
    follow(req, &t.name, &t.node.mac, before, registry, view, &mut out);
    out
}

/// Boot from the network next, then power-cycle a running machine or
/// power on one that is off.
fn boot_and_power(
    bmc: &dyn Bmc,
    name: &str,
    mac: &str,
    registry: &Registry,
    view: &dyn View,
) -> Result<(), Failure> {
    let failed = |step: &'static str, e: BmcError| {
        registry.note_power(mac, None, Some(format!("{step}: {e}")));
        Failure::Bmc {
            step,
            error: e.to_string(),
        }
    };
    view.stage(name, &format!("boot device: network ({})", bmc.describe()));
    bmc.boot_from_network_once()
        .map_err(|e| failed("boot_from_network", e))?;
    let state = bmc.status().map_err(|e| failed("power_status", e))?;
    let action = match state {
        PowerState::On => Action::Cycle,
        PowerState::Off => Action::On,
    };
    view.stage(name, &format!("power {}", action.name()));
    bmc.power(action)
        .map_err(|e| failed("power_cycle_or_on", e))?;
    registry.note_power(mac, Some(PowerState::On), None);
    Ok(())
}

/// Watch the record until a new boot reaches `req.wait`, fails, or time runs out.
fn follow(
    req: &Request,
    name: &str,
    mac: &str,
    before: u64,
    registry: &Registry,
    view: &dyn View,
    out: &mut Outcome,
) {
    let start = Instant::now();
    let mut shown: Option<Stage> = None;
    loop {
        let record = registry.record(mac).unwrap_or_else(|e| {
            tracing::debug!("{name}: {e}");
            None
        });
        if let Some(r) = record.as_ref().filter(|r| r.boots > before) {
            out.reached = furthest(r);
            // Every stage of the new boot once, in boot order, even those
            // it passed between two looks (a fast stage lasts under 500 ms).
            for s in r.stages.iter().map(|s| s.stage) {
                if s != Stage::Failed && shown.is_none_or(|seen| s > seen) {
                    view.stage(name, s.name());
                    shown = Some(s);
                }
            }
            if r.stage == Some(Stage::Failed) {
                let (step, reason) = r
                    .failure
                    .as_ref()
                    .map(|f| (f.step.clone(), f.reason.clone()))
                    .unwrap_or((None, "reported `failed` without a reason".into()));
                out.failure = Some(Failure::Boot { step, reason });
                return;
            }
            if r.stages
                .iter()
                .any(|s| s.stage >= req.wait && s.stage != Stage::Failed)
            {
                return;
            }
        }
        if start.elapsed() >= req.timeout {
            out.failure = Some(Failure::Timeout { after: req.timeout });
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The furthest stage of a record's boot that is not `failed`.
fn furthest(r: &Record) -> Option<Stage> {
    r.stages
        .iter()
        .map(|s| s.stage)
        .filter(|s| *s != Stage::Failed)
        .max()
}

/// How long a BMC may take to show the power state asked for (a real one
/// takes seconds; sushy's fake driver up to 11).
const SETTLE: Duration = Duration::from_secs(60);

/// The power state once it is what `action` asked for (on after on and
/// cycle, off after off), or what it still is when [`SETTLE`] ran out.
fn settle(bmc: &dyn Bmc, action: Action) -> Result<PowerState, BmcError> {
    let want = match action {
        Action::Off => PowerState::Off,
        _ => PowerState::On,
    };
    let start = Instant::now();
    loop {
        let state = bmc.status()?;
        if state == want || start.elapsed() >= SETTLE {
            return Ok(state);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `mkimage power`: each node's action, its answer or error as one line.
pub fn power(
    targets: &[Target],
    action: Action,
    credentials: Option<&Credentials>,
    registry: Option<&Registry>,
    parallel: usize,
    bmc_timeout: Duration,
) -> Vec<(String, Result<String, String>)> {
    bounded(targets, parallel, |t| {
        let result = connect(&t.name, &t.node, credentials, bmc_timeout).and_then(|bmc| {
            let done = match action {
                Action::Status => bmc.status(),
                _ => bmc
                    .power(action)
                    .and_then(|()| settle(bmc.as_ref(), action)),
            };
            if let Some(registry) = registry {
                match &done {
                    Ok(s) => registry.note_power(&t.node.mac, Some(*s), None),
                    Err(e) => registry.note_power(
                        &t.node.mac,
                        None,
                        Some(format!("power {}: {e}", action.name())),
                    ),
                }
            }
            done.map(|s| s.name().to_string())
                .map_err(|e| e.to_string())
        });
        (t.name.clone(), result)
    })
}
