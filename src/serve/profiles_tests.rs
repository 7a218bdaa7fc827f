//! The boot profiles' unit tests (`profiles.rs`), and the shipped example
//! boot config's.

use super::*;
use crate::artifact::Ref;

fn entry(kind: &str, name: &str, file: &str, time: u64) -> Entry {
    Entry {
        kind: kind.into(),
        name: name.into(),
        file: file.into(),
        sha256: format!("{file}-sha"),
        build_time: time,
        ..Default::default()
    }
}

fn manifest(entries: Vec<Entry>) -> Manifest {
    Manifest {
        artifacts: entries.into_iter().map(|e| (e.file.clone(), e)).collect(),
    }
}

#[test]
fn selects_by_mac_then_tag_then_default() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("boot.yml");
    std::fs::write(
        &path,
        "default: plain\nprofiles:\n  - name: raid\n    overlays: [raid]\n    macs: ['52-54-00-00-00-01']\n    tags: [storage]\n  - name: plain\nhosts:\n  '52:54:00:00:00:02': [storage]\n",
    )
    .unwrap();
    let config = BootConfig::load(&path).unwrap();
    assert_eq!(
        config.select(Some("52:54:00:00:00:01")).unwrap().name,
        "raid"
    );
    assert_eq!(
        config.select(Some("52:54:00:00:00:02")).unwrap().name,
        "raid"
    );
    assert_eq!(
        config.select(Some("52:54:00:00:00:03")).unwrap().name,
        "plain"
    );
    assert_eq!(config.select(None).unwrap().name, "plain");
    std::fs::write(&path, "profiles:\n  - name: a\n    typo: 1\n").unwrap();
    let err = BootConfig::load(&path).unwrap_err().to_string();
    assert!(err.contains("line 3"), "{err}");
    assert_eq!(
        normalize_mac("AABBCCDDEEFF").as_deref(),
        Some("aa:bb:cc:dd:ee:ff")
    );
    assert_eq!(normalize_mac("aa:bb"), None);
}

struct Hw(&'static str, &'static str, &'static str);

impl Facts for Hw {
    fn fact(&self, name: &str) -> Option<&str> {
        match name {
            "vendor" => Some(self.0),
            "model" => Some(self.1),
            "serial" => Some(self.2),
            _ => None,
        }
    }
}

#[test]
fn selects_by_facts_after_macs_and_before_tags() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("boot.yml");
    std::fs::write(
        &path,
        "default: discovery\nprofiles:\n  - name: discovery\n  - name: pinned\n    macs: ['52:54:00:00:00:01']\n  - name: vms\n    match: {vendor: qemu, model: 'Standard PC*'}\n  - name: one\n    match: {serial: ABC123}\n  - name: tagged\n    tags: [t]\nhosts:\n  '52:54:00:00:00:03': [t]\n",
    )
    .unwrap();
    let c = BootConfig::load(&path).unwrap();
    let qemu = Hw("QEMU", "Standard PC (i440FX + PIIX, 1996)", "");
    let pick = |mac: &str, facts: Option<&dyn Facts>| {
        let (p, how) = c.select_for(Some(mac), facts);
        (p.unwrap().name.clone(), how)
    };
    assert_eq!(
        pick("52:54:00:00:00:01", Some(&qemu)),
        ("pinned".into(), Selected::Mac)
    );
    assert_eq!(
        pick("52:54:00:00:00:02", Some(&qemu)),
        ("vms".into(), Selected::Facts)
    );
    assert_eq!(
        pick("52:54:00:00:00:03", Some(&qemu)),
        ("vms".into(), Selected::Facts),
        "facts before tags"
    );
    assert_eq!(
        pick("52:54:00:00:00:03", None),
        ("tagged".into(), Selected::Tag)
    );
    assert_eq!(
        pick("52:54:00:00:00:02", Some(&Hw("QEMU", "Other", ""))),
        ("discovery".into(), Selected::Default),
        "every fact must match"
    );
    assert_eq!(
        pick("52:54:00:00:00:02", Some(&Hw("Dell", "R640", "abc123"))),
        ("one".into(), Selected::Facts)
    );
    assert_eq!(
        pick("52:54:00:00:00:02", None),
        ("discovery".into(), Selected::Default),
        "undiscovered: the default, new"
    );
    for (bad, why) in [
        ("{colour: red}", "`colour` is not a fact"),
        ("{vendor: ''}", "`vendor` is empty"),
    ] {
        std::fs::write(&path, format!("profiles:\n  - name: p\n    match: {bad}\n")).unwrap();
        let err = BootConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains(why), "{err}");
    }
}

#[test]
fn remote_overlays_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("boot.yml");
    let sha = "ab".repeat(32);
    std::fs::write(&path, format!("profiles:\n  - name: t\n    overlays: [disc, {{url: 'http://10.0.2.2:9/check.cpio.gz', sha256: {sha}}}]\n")).unwrap();
    let config = BootConfig::load(&path).unwrap();
    let want = OverlayRef::Remote {
        url: "http://10.0.2.2:9/check.cpio.gz".into(),
        sha256: sha.clone(),
    };
    assert_eq!(
        config.profiles[0].overlays,
        vec![OverlayRef::from("disc"), want]
    );
    for (bad, why) in [
        (
            format!("{{url: 'ftp://x/o', sha256: {sha}}}"),
            "must start with http",
        ),
        (
            format!("{{url: 'http://x/a,b', sha256: {sha}}}"),
            "percent-encode",
        ),
        ("{url: 'http://x/o', sha256: abc}".to_string(), "64 hex"),
        ("{url: 'http://x/o'}".to_string(), "needs both"),
        (
            format!("{{url: 'http://x/o', sha256: {sha}, size: 1}}"),
            "unknown overlay key `size`",
        ),
    ] {
        std::fs::write(
            &path,
            format!("profiles:\n  - name: t\n    overlays:\n      - {bad}\n"),
        )
        .unwrap();
        let err = BootConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains(why) && err.contains("line 4"), "{bad}: {err}");
    }
}

#[test]
fn resolves_names_and_derives_default() {
    let mut child = entry("overlay", "raid", "raid.cpio.gz", 3);
    child.parents = vec![Ref {
        file: "disc.cpio.gz".into(),
        sha256: "x".into(),
    }];
    let mut foreign = entry("overlay", "old", "old.cpio.gz", 1);
    foreign.base = Some(Ref {
        file: "x".into(),
        sha256: "other".into(),
    });
    let m = manifest(vec![
        entry("kernel", "k", "vmlinuz", 1),
        entry("initrd", "k", "initrd.img", 1),
        entry("basefs", "base", "base.squashfs", 2),
        child,
        entry("overlay", "disc", "disc.cpio.gz", 2),
        foreign,
    ]);
    let r = derive_default(&m).unwrap();
    assert_eq!(r.basefs.file, "base.squashfs");
    assert!(
        r.overlays.is_empty(),
        "no overlay without a profile naming it: {:?}",
        r.overlays
    );
    let p = Profile {
        name: "p".into(),
        overlays: vec!["raid".into(), "disc.cpio.gz".into()],
        ..Default::default()
    };
    let r = resolve(&p, &m).unwrap();
    assert_eq!(r.overlays[0].sha256, "raid.cpio.gz-sha");
    let bad = Profile {
        name: "p".into(),
        overlays: vec!["nope".into()],
        ..Default::default()
    };
    assert!(resolve(&bad, &m)
        .unwrap_err()
        .to_string()
        .contains("no overlay `nope`"));
}

mod shipped {
    #[test]
    fn the_example_boot_config_is_valid() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("vars/boot.yml");
        let config = super::super::BootConfig::load(&path).unwrap();
        assert_eq!(
            config.select(Some("52:54:00:00:10:01")).unwrap().name,
            "lab-rescue"
        );
        assert_eq!(config.select(None).unwrap().name, "discovery");
    }
}
