//! `mkimage publish --secure-boot --keys DIR`: the static tree holds the
//! Secure Boot path — shim, Debian's signed GRUB, the GRUB stub and a config
//! per machine, and each profile's UKI signed with the site key (by
//! content, and by name for HTTP boot and for shim) — and nginx alone serves
//! the UKI and the machine's GRUB config with the bytes `mkimage serve`
//! answers for the same build (the config without the words only a server
//! with a node registry adds: `mkimage.api=`, `mkimage.token=`).

use crate::nginx_support;
use crate::serve_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use nginx_support::{free_port, Nginx};
use serve_support::{build, build_bootable, get, pseudo_random, require, sha256_hex, Server};

const MAC: &str = "52:54:00:aa:00:01";

fn mkimage(cwd: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mkimage"))
        .current_dir(cwd)
        .args(args)
        .output()
        .expect("run mkimage")
}

fn prerequisites() {
    require("nginx", "nginx");
    for (file, package) in [
        ("/usr/lib/shim/shimx64.efi.signed", "shim-signed"),
        (
            "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed",
            "grub-efi-amd64-signed",
        ),
        (
            "/usr/lib/systemd/boot/efi/linuxx64.efi.stub",
            "systemd-boot-efi",
        ),
        ("/usr/bin/sbverify", "sbsigntool"),
    ] {
        assert!(
            Path::new(file).is_file(),
            "{file} is missing: apt-get install -y {package} (scripts/install-deps)"
        );
    }
}

/// The config without the words a server with a node registry adds.
fn without_registry(cfg: &str) -> String {
    cfg.split('\n')
        .map(|l| {
            l.split(' ')
                .filter(|w| !w.starts_with("mkimage.api=") && !w.starts_with("mkimage.token="))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn published_tree_holds_the_secure_boot_path_and_signed_ukis() {
    prerequisites();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("builds");
    let (base_sha, keys) = build_a_rescue_profile_and_site_keys(tmp.path(), &dir);
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let url = format!("http://{listen}");
    let out = tmp.path().join("www");
    let said = publish_holds_the_secure_boot_path(tmp.path(), &dir, &keys, &url);
    let (by_content, bytes) =
        each_uki_is_signed_and_names_no_machine(&out, &said, &keys, &url, &base_sha);
    nginx_alone_answers_what_serve_answers(tmp.path(), &dir, listen, (&by_content, &bytes));
}

/// A bootable set, a rescue overlay and profile for MAC, and `mkimage keys
/// init`'s site keys. Gives the basefs's sha256 and the keys' dir.
fn build_a_rescue_profile_and_site_keys(tmp: &Path, dir: &Path) -> (String, PathBuf) {
    std::fs::create_dir(dir).unwrap();
    let base = build_bootable(dir, &pseudo_random(1 << 20, 21));
    build(
        dir,
        "overlay",
        "rescue",
        "rescue.cpio.gz",
        &pseudo_random(40_000, 22),
        &[&base],
    );
    std::fs::write(
        tmp.join("boot.yml"),
        format!("default: plain\nprofiles:\n  - name: plain\n  - name: rescue\n    overlays: [rescue]\n    macs: ['{MAC}']\n"),
    )
    .unwrap();
    let keys = tmp.join("keys");
    let o = mkimage(tmp, &["keys", "init", "--dir", keys.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (base.sha256.clone(), keys)
}

/// `mkimage publish --secure-boot` into TMP/www: shim, GRUB, the GRUB stub
/// and configs, the UKIs. Gives what it said.
fn publish_holds_the_secure_boot_path(tmp: &Path, dir: &Path, keys: &Path, url: &str) -> String {
    let out = tmp.join("www");
    let o = mkimage(
        tmp,
        &[
            "publish",
            out.to_str().unwrap(),
            "--dir",
            dir.to_str().unwrap(),
            "--boot-config",
            "boot.yml",
            "--public-url",
            url,
            "--secure-boot",
            "--keys",
            keys.to_str().unwrap(),
        ],
    );
    let said = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for f in [
        "shimx64.efi".to_string(),
        "grubx64.efi".into(),
        "grub/grub.cfg".into(),
        "grub/grub.cfg-default".into(),
        format!("grub/grub.cfg-{MAC}"),
        "uki/plain.efi".into(),
        "uki/rescue.efi".into(),
        "uki/rescue/shimx64.efi".into(),
        "uki/rescue/grubx64.efi".into(),
    ] {
        assert!(out.join(&f).is_file(), "{f} missing from the tree:\n{said}");
    }
    let shim = std::fs::read(out.join("shimx64.efi")).unwrap();
    assert_eq!(
        shim,
        std::fs::read("/usr/lib/shim/shimx64.efi.signed").unwrap()
    );
    let stub = std::fs::read_to_string(out.join("grub/grub.cfg")).unwrap();
    assert!(stub.contains(
        "configfile $prefix/grub.cfg-$net_default_mac\nconfigfile $prefix/grub.cfg-default\n"
    ));
    said
}

/// Each UKI: by content, signed with the site key, no machine and no
/// registry on its (signed) command line. Gives the rescue UKI's
/// content-addressed path and its bytes.
fn each_uki_is_signed_and_names_no_machine(
    out: &Path,
    said: &str,
    keys: &Path,
    url: &str,
    base_sha: &str,
) -> (String, Vec<u8>) {
    let uki = out.join("uki/rescue.efi");
    let bytes = std::fs::read(&uki).unwrap();
    let sha = sha256_hex(&bytes);
    let by_content = format!("/sha256/{sha}/rescue.efi");
    assert!(said.contains(&by_content[1..]), "{said}");
    assert_eq!(std::fs::read(out.join(&by_content[1..])).unwrap(), bytes);
    assert_eq!(
        std::fs::read(out.join("uki/rescue/grubx64.efi")).unwrap(),
        bytes
    );
    let verify = Command::new("sbverify")
        .arg("--cert")
        .arg(keys.join("db.crt"))
        .arg(&uki)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "sbverify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let other = tempfile::tempdir().unwrap();
    let stranger = mkimage::secureboot::keys::init(&other.path().join("k")).unwrap();
    let refused = Command::new("sbverify")
        .arg("--cert")
        .arg(&stranger.cert)
        .arg(&uki)
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "another key's certificate verified the UKI"
    );
    let cmdline = mkimage::secureboot::uki::cmdline_of(&uki).unwrap();
    assert!(
        cmdline.contains(&format!("basefs={url}/sha256/{base_sha}/base.squashfs"))
            && cmdline.contains("overlayfs.sha256="),
        "{cmdline}"
    );
    for word in ["BOOTIF=", "mkimage.api=", "mkimage.token="] {
        assert!(!cmdline.contains(word), "{word} in the UKI: {cmdline}");
    }
    (by_content, bytes)
}

/// nginx alone, from publish's own nginx.conf, answers what serve answers:
/// the UKI by content, the machine's GRUB config (without the registry's
/// words) and the default one; what GRUB then loads over TFTP is in the tree.
fn nginx_alone_answers_what_serve_answers(
    tmp: &Path,
    dir: &Path,
    listen: SocketAddr,
    (by_content, bytes): (&str, &[u8]),
) {
    let url = format!("http://{listen}");
    let out = tmp.join("www");
    let conf = std::fs::read_to_string(out.join("nginx.conf")).unwrap();
    let nginx = Nginx::start(
        tmp,
        listen,
        &conf.replace(
            &format!("listen {};", listen.port()),
            &format!("listen {listen};"),
        ),
    );
    let served = Server::start(
        tmp,
        dir,
        &["--boot-config", "boot.yml", "--public-url", &url],
    );
    let from_nginx = get(nginx.addr, by_content);
    assert_eq!(from_nginx.status, 200);
    let from_serve = get(served.http, by_content);
    assert_eq!(from_serve.status, 200, "{}", from_serve.text());
    assert!(
        from_nginx.body == bytes && from_serve.body == bytes,
        "nginx and serve answer other bytes for {by_content}"
    );
    let cfg = get(nginx.addr, &format!("/grub/grub.cfg-{MAC}"));
    assert_eq!(cfg.status, 200);
    let rendered = get(served.http, &format!("/grub.cfg?mac={MAC}")).text();
    assert!(
        rendered.contains(&format!("mkimage.api={url}")),
        "{rendered}"
    );
    assert_eq!(cfg.text(), without_registry(&rendered));
    assert!(cfg.text().contains("profile rescue"), "{}", cfg.text());
    let default = get(nginx.addr, "/grub/grub.cfg-default").text();
    assert_eq!(
        default,
        without_registry(&get(served.http, "/grub.cfg").text())
    );
    let linux = cfg
        .text()
        .lines()
        .find(|l| l.starts_with("linux "))
        .map(str::to_string)
        .unwrap();
    let kernel = linux.split_whitespace().nth(1).unwrap();
    assert!(out.join(&kernel[1..]).is_file(), "{kernel} not in the tree");
}
