//! Copies into the disk caches, behind the build. A build whose dir is in
//! RAM (`build_dir:`) goes on with a bootstrapped tree or a task's layer
//! as soon as it is made, from RAM; a thread of its own copies it into the
//! cache meanwhile, one copy after another, so a build's critical path
//! never waits for the disk. The build settles (joins) before its dir is
//! taken down, since the copies read from it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

type Job = Box<dyn FnOnce() -> anyhow::Result<()> + Send>;

/// One thread running queued copies in order.
pub struct WriteBehind {
    queue: Option<mpsc::Sender<(String, Job)>>,
    worker: Option<JoinHandle<Vec<String>>>,
    /// Set when the build failed: queued copies are skipped.
    cancelled: Arc<AtomicBool>,
    submitted: AtomicUsize,
}

impl WriteBehind {
    pub fn start() -> anyhow::Result<WriteBehind> {
        let (queue, jobs) = mpsc::channel::<(String, Job)>();
        let cancelled = Arc::new(AtomicBool::new(false));
        let stop = cancelled.clone();
        let worker = std::thread::Builder::new()
            .name("write-behind".into())
            .spawn(move || {
                // The copies (and the `cp`s they start, which inherit it)
                // take the CPU the build leaves idle. Linux's nice is per
                // thread.
                // SAFETY: setpriority on the calling thread; no memory involved.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
                let mut failed = Vec::new();
                for (what, job) in jobs {
                    if stop.load(Ordering::Relaxed) {
                        continue;
                    }
                    let started = std::time::Instant::now();
                    match job() {
                        Ok(()) => tracing::debug!(
                            "cached {what} in {:.1}s",
                            started.elapsed().as_secs_f64()
                        ),
                        Err(e) => failed.push(format!("{what}: {e:#}")),
                    }
                }
                failed
            })?;
        Ok(WriteBehind {
            queue: Some(queue),
            worker: Some(worker),
            cancelled,
            submitted: AtomicUsize::new(0),
        })
    }

    /// Queue `job`, which stores `what` (for messages).
    pub fn submit(
        &self,
        what: impl Into<String>,
        job: impl FnOnce() -> anyhow::Result<()> + Send + 'static,
    ) {
        let what = what.into();
        self.submitted.fetch_add(1, Ordering::Relaxed);
        let sent = self
            .queue
            .as_ref()
            .map(|q| q.send((what.clone(), Box::new(job))).is_ok());
        if sent != Some(true) {
            tracing::warn!("not cached (the copying thread is gone): {what}");
        }
    }

    /// How many copies were queued.
    pub fn submitted(&self) -> usize {
        self.submitted.load(Ordering::Relaxed)
    }

    /// Wait for every queued copy; one line per copy that failed. A copy
    /// that failed costs only a later build's time, so callers warn.
    pub fn settle(&mut self) -> Vec<String> {
        self.queue = None;
        match self.worker.take().map(JoinHandle::join) {
            Some(Ok(failed)) => failed,
            Some(Err(_)) => vec!["the copying thread panicked".into()],
            None => Vec::new(),
        }
    }

    /// Skip what is still queued (the build failed), wait for the copy
    /// under way.
    pub fn cancel(&mut self) {
        self.cancelled.store(true, Ordering::Relaxed);
        let _ = self.settle();
    }
}

impl Drop for WriteBehind {
    fn drop(&mut self) {
        self.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn copies_run_in_order_and_settle_reports_each_failure() {
        let done = Arc::new(Mutex::new(Vec::new()));
        let mut wb = WriteBehind::start().unwrap();
        for i in 0..3 {
            let done = done.clone();
            wb.submit(format!("layer {i}"), move || {
                std::thread::sleep(std::time::Duration::from_millis(20));
                done.lock().unwrap().push(i);
                anyhow::ensure!(i != 1, "disk full");
                Ok(())
            });
        }
        assert_eq!(wb.settle(), vec!["layer 1: disk full".to_string()]);
        assert_eq!(*done.lock().unwrap(), vec![0, 1, 2]);
        // Settled: a later submit is refused, not run.
        wb.submit("late", || panic!("ran after settle"));
        assert!(wb.settle().is_empty());
    }

    #[test]
    fn a_cancelled_queue_skips_what_has_not_started() {
        let ran = Arc::new(Mutex::new(Vec::new()));
        let (started_tx, started_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let mut wb = WriteBehind::start().unwrap();
        let r = ran.clone();
        wb.submit("first", move || {
            started_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            r.lock().unwrap().push("first");
            Ok(())
        });
        let r = ran.clone();
        wb.submit("second", move || {
            r.lock().unwrap().push("second");
            Ok(())
        });
        started_rx.recv().unwrap();
        wb.cancelled.store(true, Ordering::Relaxed);
        go_tx.send(()).unwrap();
        wb.cancel();
        assert_eq!(*ran.lock().unwrap(), vec!["first"]);
    }
}
