//! The builds: basefs, overlay and initrd, and playbooks that chain them.
//! Each reads as named steps: validated plan → enter the sandbox →
//! bootstrap or mount inputs → run roles → clean → pack → publish.

pub mod basefs;
pub mod check;
pub mod cleanup;
pub mod facts;
pub mod flatten;
pub mod initrd;
pub mod inputs;
pub mod job;
pub mod kernel_trim;
pub mod lock_cmd;
pub mod modules_shadow;
pub mod modules_warm;
pub mod modules_xz;
pub mod never_ship;
pub mod overlay;
pub mod uptodate;
pub mod workdir;

use std::path::PathBuf;

pub use crate::config::Kind;
use crate::config::Plan;
use crate::progress::Progress;
pub use job::{BuildOptions, Job};

/// `mkimage basefs|overlay|initrd --vars FILE`, resolved by the CLI.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub kind: Kind,
    pub vars: PathBuf,
    /// `--var KEY=VALUE`, in order.
    pub overrides: Vec<String>,
    /// Where artifacts go (and where inputs such as the basefs are found).
    pub out: PathBuf,
    /// Keep the build directory when the build fails (for debugging).
    pub keep_build_dir: bool,
    pub options: BuildOptions,
}

/// `mkimage play PLAYBOOK`, resolved by the CLI.
#[derive(Debug, Clone)]
pub struct PlayRequest {
    pub playbook: PathBuf,
    pub overrides: Vec<String>,
    pub out: PathBuf,
    pub keep_build_dir: bool,
    pub options: BuildOptions,
}

/// `mkimage check`: every option, role and `--var` of the builds named,
/// and whether the bootstrapper takes the options given; builds nothing.
pub fn check(
    target: &check::Target,
    overrides: &[String],
    out: &std::path::Path,
) -> anyhow::Result<()> {
    let plans = check::plans(target, overrides, out)?;
    if let (check::Target::Vars(file), true) = (target, plans.is_empty()) {
        println!(
            "{}: ok (settings for other vars files to include; no `name:`, so no build)",
            file.display()
        );
    }
    preflight(&plans)?;
    for plan in plans {
        let n = plan.provisioners.len();
        println!(
            "{}: ok ({} build, {}, {n} role{})",
            plan.file.display(),
            plan.kind.name(),
            plan.suite,
            if n == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

/// What can be known wrong before the sandbox is entered.
fn preflight(plans: &[Plan]) -> anyhow::Result<()> {
    for plan in plans.iter().filter(|p| p.kind == Kind::Basefs) {
        crate::bootstrap::preflight(plan)?;
    }
    for plan in plans {
        if let Some(lock) = &plan.lock {
            crate::lockfile::Lock::load(lock, &plan.file)?.check_for(
                lock,
                &plan.suite,
                &plan.arch,
            )?;
        }
    }
    Ok(())
}

/// `mkimage basefs|overlay|initrd --vars FILE`.
pub fn run(req: &BuildRequest) -> anyhow::Result<()> {
    // Every option and role is checked before anything needs root.
    let plan = check::validated(&req.vars, &req.overrides, req.kind, &req.out)?;
    preflight(std::slice::from_ref(&plan))?;
    if let Some(save) = &req.options.save {
        crate::tree_tar::check_name(save)?;
    }
    if let Some(from) = &req.options.from {
        crate::tree_tar::check_name(from)?;
        if !from.is_file() {
            return Err(crate::UsageError(format!(
                "--from {}: no such stage archive (write one with `mkimage basefs --save FILE`)",
                from.display()
            ))
            .into());
        }
    }
    crate::sys::sandbox::enter()?;
    let progress = Progress::new();
    let job = Job {
        plan: &plan,
        keep_build_dir: req.keep_build_dir,
        progress: &progress,
        sys: &crate::sys::REAL,
        options: &req.options,
    };
    build(&job)?;
    print_times();
    Ok(())
}

/// The time table of what was built (stderr: stdout holds the artifacts).
fn print_times() {
    if let Some(table) = crate::timings::table() {
        eprint!("{table}");
    }
}

/// Run one build inside the sandbox.
pub fn build(job: &Job) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let plan = job.plan;
    crate::timings::build(format!("{} `{}`", plan.kind.name(), plan.name));
    let published = match plan.kind {
        Kind::Basefs => basefs::build(job)?,
        Kind::Overlay => overlay::build(job)?,
        Kind::Initrd => initrd::build(job)?,
    };
    crate::timings::end();
    job.progress.finish();
    for entry in &published {
        println!(
            "{}  {}  {} bytes",
            entry.sha256,
            plan.out.join(&entry.file).display(),
            entry.size
        );
    }
    tracing::info!(
        "{} `{}` done in {:.1}s",
        plan.kind.name(),
        plan.name,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `mkimage play PLAYBOOK`: every build in order, stopping at the first failure.
pub fn play(req: &PlayRequest) -> anyhow::Result<()> {
    let plans = check::playbook_plans(&req.playbook, &req.overrides, &req.out)?;
    play_plans(&plans, &req.playbook, req.keep_build_dir, &req.options)
}

/// Every build of `plans` (from the file `source`) in order, in the
/// sandbox, stopping at the first failure.
fn play_plans(
    plans: &[Plan],
    source: &std::path::Path,
    keep_build_dir: bool,
    options: &BuildOptions,
) -> anyhow::Result<()> {
    preflight(plans)?;
    crate::sys::sandbox::enter()?;
    // An initrd's packages do not depend on the builds before it: they
    // are fetched while those run.
    std::thread::scope(|s| {
        for plan in plans.iter().skip(1).filter(|p| p.kind == Kind::Initrd) {
            s.spawn(|| {
                let _span = tracing::info_span!("prefetch").entered();
                initrd::prefetch(plan)
            });
        }
        build_each(plans, source, keep_build_dir, options)
    })?;
    print_times();
    Ok(())
}

/// `play_plans`' builds in order, except that an initrd, which needs only
/// the basefs before it, is built beside the overlays that follow that
/// basefs. A failure stops the builds not yet started; the first failed
/// build in the playbook's order is the error.
fn build_each(
    plans: &[Plan],
    source: &std::path::Path,
    keep_build_dir: bool,
    options: &BuildOptions,
) -> anyhow::Result<()> {
    let progress = Progress::new();
    let one = |i: usize, progress: &Progress| {
        let plan = &plans[i];
        progress.step(format!(
            "play {}/{}: {} `{}`",
            i + 1,
            plans.len(),
            plan.kind.name(),
            plan.name
        ));
        let job = Job {
            plan,
            keep_build_dir,
            progress,
            sys: &crate::sys::REAL,
            options,
        };
        build(&job).map_err(|e| {
            let e = e.context(format!(
                "{}: build {} ({} `{}`) failed",
                source.display(),
                i + 1,
                plan.kind.name(),
                plan.name
            ));
            (i, e)
        })
    };
    let kinds: Vec<Kind> = plans.iter().map(|p| p.kind).collect();
    for segment in segments(&kinds) {
        if let Some(basefs) = segment.basefs {
            one(basefs, &progress).map_err(|(_, e)| e)?;
        }
        std::thread::scope(|s| {
            let beside = (!segment.beside.is_empty()).then(|| {
                s.spawn(|| {
                    let lines = Progress::lines();
                    segment.beside.iter().try_for_each(|&i| one(i, &lines))
                })
            });
            let mine = segment.main.iter().try_for_each(|&i| one(i, &progress));
            let theirs = beside.map_or(Ok(()), |h| {
                h.join()
                    .unwrap_or_else(|_| Err((0, anyhow::anyhow!("an initrd build panicked"))))
            });
            // Each lane stops at its first failure; the earlier one is the error.
            match (mine, theirs) {
                (Err(a), Err(b)) => Err(if a.0 <= b.0 { a.1 } else { b.1 }),
                (Err((_, e)), Ok(())) | (Ok(()), Err((_, e))) => Err(e),
                (Ok(()), Ok(())) => Ok(()),
            }
        })?;
    }
    progress.finish();
    Ok(())
}

/// A basefs build (or the playbook's start) and the builds up to the next
/// basefs: those in `main` run in order after it, those in `beside` (the
/// initrds, which need only that basefs) on a thread of their own.
#[derive(Debug, PartialEq)]
struct Segment {
    basefs: Option<usize>,
    main: Vec<usize>,
    beside: Vec<usize>,
}

fn segments(kinds: &[Kind]) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < kinds.len() {
        let basefs = (kinds[at] == Kind::Basefs).then_some(at);
        let from = at + usize::from(basefs.is_some());
        let end = (from..kinds.len())
            .find(|&i| kinds[i] == Kind::Basefs)
            .unwrap_or(kinds.len());
        let (mut beside, mut main): (Vec<usize>, Vec<usize>) =
            (from..end).partition(|&i| kinds[i] == Kind::Initrd);
        // With nothing to run beside, everything runs in order.
        if main.is_empty() {
            std::mem::swap(&mut main, &mut beside);
        }
        out.push(Segment {
            basefs,
            main,
            beside,
        });
        at = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use Kind::{Basefs as B, Initrd as I, Overlay as O};

    fn seg(basefs: Option<usize>, main: &[usize], beside: &[usize]) -> Segment {
        Segment {
            basefs,
            main: main.to_vec(),
            beside: beside.to_vec(),
        }
    }

    #[test]
    fn initrds_run_beside_the_overlays_of_their_basefs() {
        assert_eq!(segments(&[B, O, I]), vec![seg(Some(0), &[1], &[2])]);
        assert_eq!(
            segments(&[B, I, O, O, B, O]),
            vec![seg(Some(0), &[2, 3], &[1]), seg(Some(4), &[5], &[])]
        );
        // Nothing to overlap: in order.
        assert_eq!(segments(&[B, I]), vec![seg(Some(0), &[1], &[])]);
        assert_eq!(
            segments(&[I, B, I, I]),
            vec![seg(None, &[0], &[]), seg(Some(1), &[2, 3], &[])]
        );
        assert_eq!(segments(&[O, I]), vec![seg(None, &[0], &[1])]);
        assert_eq!(segments(&[]), vec![]);
    }
}
