//! A mirror that misbehaves, on loopback (`mirror_support`: trixie's real,
//! signed InRelease and the files a test needs, copied from the host's
//! mirror, served with faults), against mkimage's real code: the initrd's
//! firmware lookup (`initramfs::firmware::complete` through the private
//! apt: `apt-get update` with the Contents index, `apt-get download`) and
//! `mkimage basefs` (mmdebstrap).
//!
//! - a needed index cut short (its size not InRelease's, as this
//!   workplace's mirror serves one) is retried, each retry logged, then
//!   fails in one line naming the mirror, the file and both sizes;
//! - an index the build does not need (non-free-firmware's Contents-amd64,
//!   cut short) is never asked for;
//! - a 503 and reset connections the first time are retried and succeed
//!   (by apt itself), a 503 that outlasts apt's retries by mkimage;
//! - a 404 fails at once, without retries.

use crate::common;
use crate::mirror_support;

use std::path::Path;
use std::time::Instant;

use common::*;
use mirror_support::*;
use mkimage::apt::{AptSource, Fetcher};
use mkimage::initramfs::firmware::{self, Collected, Source};
use mkimage::initramfs::modules::Module;

/// The initrd's private apt, reduced to the firmware component.
fn source(mirror: &Mirror, cache: &Path) -> AptSource {
    let mut src = AptSource::new(SUITE, cache);
    src.mirror = Some(mirror.url.clone());
    src.components = vec![firmware::COMPONENT.into()];
    src.contents = vec![firmware::COMPONENT.into()];
    src
}

/// Debian firmware for a module that declares the fixture's firmware file.
fn firmware_for(src: &AptSource) -> anyhow::Result<Collected> {
    let module = Module {
        name: "ast".into(),
        rel: "kernel/drivers/gpu/drm/ast/ast.ko".into(),
        depends: vec![],
        softdep_pre: vec![],
        firmware: vec![fixture().firmware_file.clone()],
    };
    firmware::complete(&[module], Vec::new(), Source::Debian, &|| Fetcher::new(src))
}

fn cache() -> tempfile::TempDir {
    tempfile::tempdir_in(scratch()).unwrap()
}

#[test]
fn a_needed_index_cut_short_is_retried_then_one_clear_line() {
    let fx = fixture();
    let want = fx.sizes[CONTENTS_ALL];
    let cut = want as usize - 25;
    let mirror = Mirror::start(&[(CONTENTS_ALL, Fault::Truncate(cut))]);
    let cache = cache();
    let (_guard, logs) = capture_logs();
    let started = Instant::now();
    let err = firmware_for(&source(&mirror, cache.path())).expect_err("a broken index");
    let line = mkimage::progress::format_error(&err);
    assert!(!line.contains('\n'), "one line: {line}");
    let expected = format!(
        "the mirror {} serves {CONTENTS_ALL} at {cut} bytes but its signed InRelease says {want} \
         (a mirror caught mid-sync?): retried 3 times over ",
        mirror.url
    );
    assert!(
        line.contains(&expected)
            && line.ends_with(" s; try again later or set mirror: in vars/common.yml"),
        "{line}"
    );
    let logged = logged(&logs);
    for n in 1..=3 {
        assert!(
            logged.contains(&format!(
                "{expected_head}; retry {n} of 3 in ",
                expected_head = &expected[..expected.find(": retried").unwrap()]
            )),
            "retry {n} not logged:\n{logged}"
        );
    }
    assert_eq!(mirror.count(CONTENTS_ALL), 4, "{:?}", mirror.requests());
    assert!(started.elapsed().as_secs() >= 14, "2 + 4 + 8 s of backoff");
}

#[test]
fn an_unneeded_contents_amd64_cut_short_is_never_asked_for() {
    let fx = fixture();
    // The fixture's Contents-amd64.gz is a prefix: broken as the real one is.
    assert!(
        std::fs::metadata(fx.root.join(CONTENTS_AMD64))
            .unwrap()
            .len()
            < fx.sizes[CONTENTS_AMD64]
    );
    let mirror = Mirror::start(&[]);
    let cache = cache();
    let (_guard, logs) = capture_logs();
    let got = firmware_for(&source(&mirror, cache.path())).expect("firmware from Contents-all");
    assert!(
        got.files
            .iter()
            .any(|f| f.name.starts_with(&fx.firmware_file)),
        "{:?}",
        got.files
    );
    assert!(got.packages.contains_key(&fx.package), "{:?}", got.packages);
    let asked = mirror.requests();
    assert!(
        !asked.iter().any(|p| p.contains("Contents-amd64")),
        "asked for Contents-amd64: {asked:?}"
    );
    assert_eq!(mirror.count(CONTENTS_ALL), 1, "{asked:?}");
    assert!(!logged(&logs).contains("retry"), "{}", logged(&logs));
}

#[test]
fn a_503_and_resets_the_first_time_are_retried_and_succeed() {
    let fx = fixture();
    let inrelease = format!("dists/{SUITE}/InRelease");
    let mirror = Mirror::start(&[
        (
            inrelease.as_str(),
            Fault::Status {
                code: 503,
                times: 1,
            },
        ),
        (CONTENTS_ALL, Fault::Reset { times: 1 }),
        (fx.deb.as_str(), Fault::Reset { times: 1 }),
    ]);
    let cache = cache();
    let got = firmware_for(&source(&mirror, cache.path())).expect("retried to success");
    assert!(got.packages.contains_key(&fx.package));
    for file in [inrelease.as_str(), CONTENTS_ALL, fx.deb.as_str()] {
        assert!(
            mirror.count(file) >= 2,
            "{file} not asked for again: {:?}",
            mirror.requests()
        );
    }
}

/// apt retries a 5xx 3 times itself (1 + 2 + 4 s); one that outlasts them
/// fails the command, and mkimage runs it again.
#[test]
fn a_503_outlasting_apts_own_retries_is_retried_by_mkimage() {
    let fx = fixture();
    let mirror = Mirror::start(&[(
        fx.deb.as_str(),
        Fault::Status {
            code: 503,
            times: 4,
        },
    )]);
    let cache = cache();
    let (_guard, logs) = capture_logs();
    let got = firmware_for(&source(&mirror, cache.path())).expect("retried to success");
    assert!(got.packages.contains_key(&fx.package));
    assert_eq!(mirror.count(&fx.deb), 5, "{:?}", mirror.requests());
    let logged = logged(&logs);
    assert!(
        logged.contains(&format!(
            "the mirror {} answers 503 Service Unavailable for {}; retry 1 of 3 in 2 s",
            mirror.url, fx.deb
        )) && !logged.contains("retry 2 of 3"),
        "{logged}"
    );
}

#[test]
fn a_404_fails_at_once() {
    let fx = fixture();
    let mirror = Mirror::start(&[(
        fx.deb.as_str(),
        Fault::Status {
            code: 404,
            times: usize::MAX,
        },
    )]);
    let cache = cache();
    let (_guard, logs) = capture_logs();
    let started = Instant::now();
    let err = firmware_for(&source(&mirror, cache.path())).expect_err("no such file");
    let line = mkimage::progress::format_error(&err);
    assert!(
        line.contains(&format!(
            "the mirror {} answers 404 Not Found for {}",
            mirror.url, fx.deb
        )) && !line.contains("retried")
            && !line.contains('\n'),
        "{line}"
    );
    assert_eq!(mirror.count(&fx.deb), 1, "{:?}", mirror.requests());
    assert!(!logged(&logs).contains("retry"), "{}", logged(&logs));
    assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());
}

#[test]
fn mmdebstrap_retries_a_cut_short_packages_index_then_one_clear_line() {
    require_root();
    require("mmdebstrap", "mmdebstrap");
    let fx = fixture();
    let mirror = Mirror::start(&[]);
    let p = Project::new();
    let vars = p.write(
        "vars/basefs.yml",
        &format!(
            "name: basefs\nsuite: {SUITE}\nvariant: minbase\nbootstrapper: mmdebstrap\nmirror: {}\n\
             cache_dir: {}\nbootstrap_cache: false\nsource_date_epoch: 1700000000\n",
            mirror.url,
            p.path().join("cache").display()
        ),
    );
    let o = p.run(&[
        "basefs",
        "--vars",
        vars.to_str().unwrap(),
        "--out",
        p.out().to_str().unwrap(),
    ]);
    let served = std::fs::metadata(fx.root.join(MAIN_PACKAGES))
        .unwrap()
        .len();
    let head = format!(
        "the mirror {} serves {MAIN_PACKAGES} at {served} bytes but its signed InRelease says {} \
         (a mirror caught mid-sync?)",
        mirror.url, fx.sizes[MAIN_PACKAGES]
    );
    assert_clean_failure(
        &p,
        &o,
        1,
        &[
            &format!("bootstrapping {SUITE} with mmdebstrap failed: {head}: retried 3 times over "),
            "try again later or set mirror: in vars/common.yml",
        ],
    );
    let err = stderr(&o);
    let last = err.trim_end().lines().last().unwrap();
    assert!(
        last.starts_with("mkimage: ") && last.contains(&head),
        "the error is one line, the last:\n{err}"
    );
    for n in 1..=3 {
        assert!(
            err.contains(&format!("{head}; retry {n} of 3 in ")),
            "retry {n} not logged:\n{err}"
        );
    }
    assert_eq!(mirror.count(MAIN_PACKAGES), 4, "{:?}", mirror.requests());
    eprintln!("{err}");
}
