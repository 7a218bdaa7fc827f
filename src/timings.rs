//! Where a build's time went: `play` (and every single build) ends with a
//! table of wall time by step — bootstrap, each role, module selection,
//! packing, verity, the initrd's downloads and packing — so the next
//! regression is seen at once. Steps are named by the progress lines
//! (`Progress::step`) and the initrd's own step marks (`mark`); a step lasts
//! until the next one starts. One table per process.

use std::sync::Mutex;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// One build's rows (part of the build, time), in the order first seen.
type Rows = Vec<(String, Duration)>;

#[derive(Default)]
struct Table {
    /// Builds in the order they started, each with its rows.
    builds: Vec<(String, Rows)>,
    /// Per thread (`play` runs an initrd beside the overlays): the build it
    /// is in, and its running step.
    threads: Vec<Thread>,
    /// When the first step started: the table's wall time runs from here.
    first: Option<Instant>,
}

struct Thread {
    id: ThreadId,
    build: usize,
    running: Option<(String, Instant)>,
}

static TABLE: Mutex<Table> = Mutex::new(Table {
    builds: Vec::new(),
    threads: Vec::new(),
    first: None,
});

fn with<T>(f: impl FnOnce(&mut Table) -> T) -> T {
    let mut t = TABLE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    f(&mut t)
}

impl Table {
    /// This thread's entry, in an unnamed build if it started none.
    fn this_thread(&mut self) -> usize {
        let id = std::thread::current().id();
        let at = match self.threads.iter().position(|t| t.id == id) {
            Some(at) => at,
            None => {
                self.builds.push((String::new(), Vec::new()));
                self.threads.push(Thread {
                    id,
                    build: self.builds.len() - 1,
                    running: None,
                });
                self.threads.len() - 1
            }
        };
        at
    }

    /// End `thread`'s running step: its time goes to its build's row.
    fn close(&mut self, thread: usize, now: Instant) {
        let Thread { build, running, .. } = &mut self.threads[thread];
        let Some((row, started)) = running.take() else {
            return;
        };
        let rows = &mut self.builds[*build].1;
        let spent = now.saturating_duration_since(started);
        match rows.iter_mut().find(|(r, _)| *r == row) {
            Some((_, d)) => *d += spent,
            None => rows.push((row, spent)),
        }
    }

    /// End this thread's running step, and start `next` (if any).
    fn switch(&mut self, next: Option<String>) {
        let now = Instant::now();
        self.first.get_or_insert(now);
        let at = self.this_thread();
        self.close(at, now);
        self.threads[at].running = next.map(|row| (row, now));
    }
}

/// A new build starts (`basefs `base``): the steps that follow on this
/// thread are its rows.
pub fn build(name: impl Into<String>) {
    with(|t| {
        t.switch(None);
        t.builds.push((name.into(), Vec::new()));
        let (last, at) = (t.builds.len() - 1, t.this_thread());
        t.threads[at].build = last;
    });
}

/// This thread's build ended: its running step ends now.
pub fn end() {
    with(|t| t.switch(None));
}

/// A step starts; `text` is its progress line, which names its row.
pub fn mark(text: &str) {
    let row = row(text);
    with(|t| t.switch(Some(row)));
}

/// The table so far (every running step ends now), or `None` when no step
/// was timed.
pub fn table() -> Option<String> {
    with(|t| {
        let now = Instant::now();
        for at in 0..t.threads.len() {
            t.close(at, now);
        }
        let wall = t.first.map(|f| now.saturating_duration_since(f));
        render(&t.builds, wall)
    })
}

/// The row a progress line belongs to: a role's tasks are one row, the
/// bootstrapper's attempts another, each packed file its own.
fn row(text: &str) -> String {
    if let Some((role, _task)) = text.split_once(" | ") {
        return format!("role {role}");
    }
    let first = text.split_whitespace().next().unwrap_or("");
    match first {
        "bootstrap" => "bootstrap".into(),
        "unpack" => "bootstrap (stage archive)".into(),
        "select" => "kernel module selection".into(),
        "clean" => "clean".into(),
        "save" => "save the tree".into(),
        _ if text.contains(" is up to date") || text.contains("; building") => {
            "up-to-date check".into()
        }
        _ if text.contains(": building (") => "up-to-date check".into(),
        _ => text.split(" from ").next().unwrap_or(text).to_string(),
    }
}

/// The table: each build's rows with their share of `wall` (the time the
/// whole run took; builds that ran side by side share it).
fn render(builds: &[(String, Rows)], wall: Option<Duration>) -> Option<String> {
    let steps: Duration = builds.iter().flat_map(|b| &b.1).map(|r| r.1).sum();
    if steps.is_zero() {
        return None;
    }
    let total = wall.unwrap_or(steps);
    let width = builds
        .iter()
        .flat_map(|b| &b.1)
        .map(|r| r.0.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(20, 60);
    let mut out = if steps > total + Duration::from_millis(100) {
        format!(
            "time by step ({:.1} s in all; {:.1} s of steps, some side by side):\n",
            total.as_secs_f64(),
            steps.as_secs_f64()
        )
    } else {
        format!("time by step ({:.1} s in all):\n", total.as_secs_f64())
    };
    // Steps under a twentieth of a second (checks, markers) are left out.
    let shown = |rows: &[(String, Duration)]| {
        rows.iter()
            .filter(|r| r.1 >= Duration::from_millis(50))
            .cloned()
            .collect::<Vec<_>>()
    };
    for (build, rows) in builds.iter() {
        let sum: Duration = rows.iter().map(|r| r.1).sum();
        let rows = shown(rows);
        if rows.is_empty() {
            continue;
        }
        out += &format!("  {build} ({:.1} s)\n", sum.as_secs_f64());
        for (row, d) in &rows {
            let name: String = row.chars().take(width).collect();
            out += &format!(
                "    {name:<width$} {:>7.1} s {:>4.0}%\n",
                d.as_secs_f64(),
                100.0 * d.as_secs_f64() / total.as_secs_f64()
            );
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_fall_into_rows() {
        assert_eq!(row("base | install packages"), "role base");
        assert_eq!(
            row("bootstrap bookworm (mmdebstrap, minbase, amd64)"),
            "bootstrap"
        );
        assert_eq!(row("select kernel modules"), "kernel module selection");
        assert_eq!(row("pack basefs.squashfs"), "pack basefs.squashfs");
        assert_eq!(
            row("initrd `initrd` from /x/basefs.squashfs"),
            "initrd `initrd`"
        );
        assert_eq!(row("initrd: fetch busybox"), "initrd: fetch busybox");
        assert_eq!(
            row("basefs `b`: no manifest entry; building"),
            "up-to-date check"
        );
    }

    #[test]
    fn rows_sum_by_build_with_shares() {
        let ms = Duration::from_millis;
        let builds = vec![
            (
                "basefs `b`".to_string(),
                vec![
                    ("bootstrap".to_string(), ms(3000)),
                    ("role base".to_string(), ms(1000)),
                ],
            ),
            (
                "initrd `i`".to_string(),
                vec![("pack".to_string(), ms(4000))],
            ),
        ];
        let t = render(&builds, None).unwrap();
        assert!(t.starts_with("time by step (8.0 s in all):\n"), "{t}");
        assert!(t.contains("  basefs `b` (4.0 s)\n"), "{t}");
        assert!(t.contains("bootstrap") && t.contains("3.0 s   38%"), "{t}");
        assert!(
            t.contains("  initrd `i` (4.0 s)\n") && t.contains("4.0 s   50%"),
            "{t}"
        );
        assert_eq!(render(&[], None), None);
        // Side by side: shares are of the wall time, which says so.
        let t = render(&builds, Some(ms(5000))).unwrap();
        assert!(
            t.starts_with("time by step (5.0 s in all; 8.0 s of steps, some side by side):\n"),
            "{t}"
        );
        assert!(t.contains("4.0 s   80%"), "{t}");
    }
}
