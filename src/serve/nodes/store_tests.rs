//! `serve::nodes::store`'s unit tests.

use super::*;
use crate::serve::nodes::stage::Stage;

#[test]
fn concurrent_updates_lose_nothing_and_leave_whole_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::new(dir.path()));
    let mac = "52:54:00:00:00:07";
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    store.update(mac, t * 100 + i, |r| r.boots += 1).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let r = store.get(mac).unwrap().unwrap();
    assert_eq!(r.boots, 200, "every update landed");
    let files: Vec<_> = fs::read_dir(dir.path().join(NODES))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files, ["52-54-00-00-00-07.json"], "no temp files left");
    // Survives a new store (a restart); a corrupt file is skipped by the listing.
    fs::write(
        dir.path().join(NODES).join("52-54-00-00-00-08.json"),
        "{not json",
    )
    .unwrap();
    let again = Store::new(dir.path());
    let all = again.all().unwrap();
    assert_eq!(all.len(), 1);
    let r = again.update(mac, 1, |r| r.saw(Stage::Booted, 1)).unwrap();
    assert_eq!((r.boots, r.stage), (200, Some(Stage::Booted)));
}

#[test]
fn deferred_changes_come_first_whenever_they_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path());
    let mac = "52:54:00:00:00:09";
    let file = dir.path().join(NODES).join(file_name(mac));
    let script =
        |ms: u64| -> Change { Box::new(move |r: &mut Record| r.saw_ms(Stage::Script, ms)) };
    // Queued, not written: nothing on disk until a flush.
    store.defer(mac, 10, script(10_000)).unwrap();
    assert!(!file.exists(), "a deferred change costs no write");
    store.flush(mac).unwrap();
    let r = store.get(mac).unwrap().unwrap();
    assert_eq!((r.boots, r.stage), (1, Some(Stage::Script)));
    // A kernel fetched before the next boot's script was written: the
    // script still goes first, and the late flush changes nothing.
    store.defer(mac, 20, script(20_000)).unwrap();
    store
        .update_fast(mac, 21, |r| r.saw_ms(Stage::Kernel, 21_000))
        .unwrap();
    store.flush(mac).unwrap();
    let r = store.get(mac).unwrap().unwrap();
    let seen: Vec<_> = r.stages.iter().map(|s| (s.stage, s.ms)).collect();
    assert_eq!(seen, [(Stage::Script, 20_000), (Stage::Kernel, 21_000)]);
    assert_eq!(
        (r.boots, r.stage, r.last_seen),
        (2, Some(Stage::Kernel), 21)
    );
    // Reads write what is queued first: one record, two scripts in order.
    store.defer(mac, 30, script(30_000)).unwrap();
    store.defer(mac, 31, script(31_000)).unwrap();
    assert_eq!(
        store.tallies().unwrap(),
        [(Some(Stage::Script), false)],
        "the tallies count it"
    );
    let all = store.all().unwrap();
    assert_eq!(
        (all.len(), all[0].boots, all[0].stages[0].ms),
        (1, 4, 31_000)
    );
    // A new machine's first record comes from its deferred change alone.
    store
        .defer("52:54:00:00:00:0a", 40, script(40_000))
        .unwrap();
    let r = store.get("52:54:00:00:00:0a").unwrap().unwrap();
    assert_eq!((r.first_seen, r.boots), (40, 1));
    store.flush_all().unwrap();
    let names: Vec<_> = fs::read_dir(dir.path().join(NODES)).unwrap().collect();
    assert_eq!(names.len(), 2, "no temp files left");
}

#[test]
fn the_writer_thread_writes_what_is_deferred() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::new(dir.path()));
    let file = |mac: &str| dir.path().join(NODES).join(file_name(mac));
    let macs: Vec<String> = (0..50).map(|i| format!("52:54:00:00:01:{i:02x}")).collect();
    for mac in &macs {
        let change: Change = Box::new(|r: &mut Record| r.saw_ms(Stage::Script, 5_000));
        store.defer(mac, 5, change).unwrap();
        store.flush_later(mac);
    }
    // Waits on the files the thread writes (no read: a read would write them itself).
    let start = Instant::now();
    let written =
        || macs.iter().all(|m| file(m).exists()) && store.deferred.lock().unwrap().is_empty();
    while !written() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the writer thread wrote them"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_read_waits_for_a_deferred_write_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::new(dir.path()));
    let mac = "52:54:00:00:00:0b";
    let (started, begun) = mpsc::channel();
    let change: Change = Box::new(move |r: &mut Record| {
        started.send(()).unwrap();
        // Still being written when the reader below asks.
        std::thread::sleep(Duration::from_millis(200));
        r.saw_ms(Stage::Script, 7_000);
    });
    store.defer(mac, 7, change).unwrap();
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || store.flush(mac).unwrap())
    };
    begun.recv().unwrap();
    let r = store.get(mac).unwrap().expect("the record being written");
    assert_eq!(r.stage, Some(Stage::Script));
    writer.join().unwrap();
}

#[test]
fn fetches_are_attributed_to_the_one_machine_behind_the_address() {
    let store = Store::new(Path::new("/nonexistent"));
    let ip: IpAddr = "10.0.0.5".parse().unwrap();
    assert_eq!(store.fetcher(ip), None);
    store.remember_fetcher(ip, "52:54:00:00:00:01");
    store.remember_fetcher(ip, "52:54:00:00:00:01");
    assert_eq!(
        store.fetcher(ip).as_deref(),
        Some("52:54:00:00:00:01"),
        "the same machine again"
    );
    assert_eq!(store.fetcher("10.0.0.6".parse().unwrap()), None);
    // A second machine behind the same address: nobody's, and it stays so.
    store.remember_fetcher(ip, "52:54:00:00:00:02");
    assert_eq!(store.fetcher(ip), None);
    store.remember_fetcher(ip, "52:54:00:00:00:02");
    assert_eq!(store.fetcher(ip), None, "still shared within the window");
}
