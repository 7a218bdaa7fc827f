//! Where a build's time went: `play` (and every single build) ends with a
//! table of wall time by step — bootstrap, each role, module selection,
//! packing, verity, the initrd's downloads and packing — so the next
//! regression is seen at once. Steps are named by the progress lines
//! (`Progress::step`) and the initrd's own step marks (`mark`); a step lasts
//! until the next one starts. One table per process.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Table {
    /// Builds in order, each with its rows (part of the build, time).
    builds: Vec<(String, Vec<(String, Duration)>)>,
    running: Option<(String, Instant)>,
}

static TABLE: Mutex<Table> = Mutex::new(Table {
    builds: Vec::new(),
    running: None,
});

fn with<T>(f: impl FnOnce(&mut Table) -> T) -> T {
    let mut t = TABLE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    f(&mut t)
}

impl Table {
    /// End the running step: its time goes to its row of the last build.
    fn close(&mut self, now: Instant) {
        let Some((row, started)) = self.running.take() else {
            return;
        };
        if self.builds.is_empty() {
            self.builds.push((String::new(), Vec::new()));
        }
        let rows = &mut self.builds.last_mut().expect("one build").1;
        let spent = now.saturating_duration_since(started);
        match rows.iter_mut().find(|(r, _)| *r == row) {
            Some((_, d)) => *d += spent,
            None => rows.push((row, spent)),
        }
    }
}

/// A new build starts (`basefs `base``): the steps that follow are its rows.
pub fn build(name: impl Into<String>) {
    with(|t| {
        t.close(Instant::now());
        t.builds.push((name.into(), Vec::new()));
    });
}

/// A step starts; `text` is its progress line, which names its row.
pub fn mark(text: &str) {
    let row = row(text);
    with(|t| {
        let now = Instant::now();
        t.close(now);
        t.running = Some((row, now));
    });
}

/// The table so far (the running step ends now), or `None` when no step
/// was timed.
pub fn table() -> Option<String> {
    with(|t| {
        t.close(Instant::now());
        render(&t.builds)
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

fn render(builds: &[(String, Vec<(String, Duration)>)]) -> Option<String> {
    let total: Duration = builds.iter().flat_map(|b| &b.1).map(|r| r.1).sum();
    if total.is_zero() {
        return None;
    }
    let width = builds
        .iter()
        .flat_map(|b| &b.1)
        .map(|r| r.0.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(20, 60);
    let mut out = format!("time by step ({:.1} s in all):\n", total.as_secs_f64());
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
        let t = render(&builds).unwrap();
        assert!(t.starts_with("time by step (8.0 s in all):\n"), "{t}");
        assert!(t.contains("  basefs `b` (4.0 s)\n"), "{t}");
        assert!(t.contains("bootstrap") && t.contains("3.0 s   38%"), "{t}");
        assert!(
            t.contains("  initrd `i` (4.0 s)\n") && t.contains("4.0 s   50%"),
            "{t}"
        );
        assert_eq!(render(&[]), None);
    }
}
