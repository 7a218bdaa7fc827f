//! `mkimage keys sign-ukis`: every profile's UKI signed with the site key
//! into the build dir's content store (verifiable with `sbverify --cert`),
//! indexed in `.state/ukis.json` with what it was built from and the URL
//! its signed command line names, served by `mkimage serve` at its content
//! URL; a bad `--public-url` or a missing key is a usage error that says
//! what to pass.

use crate::serve_support;

use std::path::Path;
use std::process::Command;

use mkimage::secureboot::uki;
use mkimage::serve::ukis::{Index, INDEX};
use serve_support::{build_bootable, get, pseudo_random, require, Server};

fn mkimage(cwd: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mkimage"))
        .current_dir(cwd)
        .args(args)
        .output()
        .expect("run mkimage")
}

#[test]
fn sign_ukis_signs_and_indexes_every_profile_for_serve() {
    require("sbverify", "sbsigntool");
    require("objcopy", "binutils");
    assert!(
        Path::new(uki::STUB).is_file(),
        "{} is missing: apt-get install -y systemd-boot-efi",
        uki::STUB
    );
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dir = t.join("builds");
    std::fs::create_dir(&dir).unwrap();
    build_bootable(&dir, &pseudo_random(1 << 16, 7));
    std::fs::write(
        t.join("boot.yml"),
        "profiles:\n  - name: one\n  - name: two\n    args: quiet\n",
    )
    .unwrap();
    let o = mkimage(t, &["keys", "init", "--dir", "keys"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let sign = |url: &str| {
        mkimage(
            t,
            &[
                "keys",
                "sign-ukis",
                "--keys",
                "keys",
                "--dir",
                "builds",
                "--boot-config",
                "boot.yml",
                "--public-url",
                url,
            ],
        )
    };
    let o = sign("10.0.0.5:8080");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("http://HOST[:PORT]"));
    assert!(
        !dir.join(INDEX).exists(),
        "nothing indexed on a usage error"
    );

    let o = sign("http://10.0.0.5:8080/");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let index = Index::load(&dir).unwrap();
    assert_eq!(index.profiles.keys().collect::<Vec<_>>(), ["one", "two"]);
    let two = &index.profiles["two"];
    assert_eq!(two.name, "two.efi");
    assert_eq!(two.base_url, "http://10.0.0.5:8080");
    assert_eq!(two.inputs.last().map(String::as_str), Some("args=quiet"));
    let object = dir.join(".state/objects").join(&two.sha256);
    let v = Command::new("sbverify")
        .arg("--cert")
        .arg(t.join("keys/db.crt"))
        .arg(&object)
        .output()
        .unwrap();
    assert!(v.status.success(), "the indexed UKI does not verify");
    let cmdline = uki::cmdline_of(&object).unwrap();
    assert!(
        cmdline.contains("mkimage.api=http://10.0.0.5:8080") && cmdline.contains("quiet"),
        "{cmdline}"
    );
    assert!(!cmdline.contains("BOOTIF=") && !cmdline.contains("mkimage.token="));

    // `mkimage serve` answers it at its content URL, never needing the key.
    let server = Server::start(t, &dir, &[]);
    let r = get(server.http, &format!("/sha256/{}/{}", two.sha256, two.name));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, std::fs::read(&object).unwrap());
}
