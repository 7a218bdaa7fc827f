//! The content store's pruner, a task on the server's runtime: every
//! quarter of the grace period (between 0.25 s and 60 s) it drops the
//! objects that neither `manifest.json` nor the index of signed UKIs
//! (`serve::ukis`) names and that have been superseded for the grace period
//! (`--grace`), so a machine that fetched its boot script just before a
//! republish can still finish its boot.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::metrics::Metrics;
use crate::artifact::objects::Pruner;
use crate::artifact::Manifest;

pub async fn run(
    dir: PathBuf,
    grace: Duration,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let every = (grace / 4).clamp(Duration::from_millis(250), Duration::from_secs(60));
    let pruner = Arc::new(Mutex::new(Pruner::default()));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        let (dir, pruner) = (dir.clone(), pruner.clone());
        let swept = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
            let live = live(&dir)?;
            let mut pruner = pruner
                .lock()
                .map_err(|_| anyhow::anyhow!("pruner state poisoned"))?;
            Ok(pruner.prune(&dir, &live, grace)?)
        })
        .await;
        match swept {
            Ok(Ok(dropped)) => {
                for sha in &dropped {
                    tracing::info!(
                        "content store: dropped {sha}, superseded for more than {grace:?}"
                    );
                }
                metrics
                    .objects_dropped
                    .fetch_add(dropped.len() as u64, Relaxed);
            }
            Ok(Err(e)) => tracing::warn!("content store: not pruned: {e:#}"),
            Err(e) => tracing::warn!("content store: pruner failed: {e}"),
        }
    }
}

/// What the content store must keep: every artifact of the manifest and
/// every UKI the index names. An unreadable manifest or index says nothing
/// about what is live: an error, and nothing is pruned.
pub fn live(dir: &Path) -> anyhow::Result<HashSet<String>> {
    let mut live: HashSet<String> = Manifest::load(dir)?
        .artifacts
        .into_values()
        .map(|e| e.sha256)
        .collect();
    live.extend(super::ukis::Index::load(dir)?.objects());
    Ok(live)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::objects::{self, Pruner};
    use crate::serve::ukis::{Entry, Index, INDEX};
    use std::time::Duration;

    #[test]
    fn the_index_round_trips_and_the_pruner_keeps_what_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(Index::load(d).unwrap(), Index::default(), "none yet: empty");
        let sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        std::fs::write(d.join("uki"), b"abc").unwrap();
        objects::add(d, &d.join("uki"), sha).unwrap();
        let mut index = Index::default();
        index.profiles.insert(
            "discovery".into(),
            Entry {
                sha256: sha.into(),
                name: "discovery.efi".into(),
                inputs: vec!["args=".into()],
                base_url: "http://10.9.0.1:8080".into(),
            },
        );
        index.save(d).unwrap();
        assert_eq!(Index::load(d).unwrap(), index);
        // Not in the manifest, but named by the index: kept past the grace.
        let live = live(d).unwrap();
        assert!(live.contains(sha));
        assert!(Pruner::default()
            .prune(d, &live, Duration::ZERO)
            .unwrap()
            .is_empty());
        assert!(objects::open(d, sha).unwrap().is_some());
        std::fs::write(d.join(INDEX), b"{\"profiles\": 1}").unwrap();
        let err = format!("{:#}", Index::load(d).unwrap_err());
        assert!(err.contains("sign-ukis"), "{err}");
    }
}
