//! `mkimage publish OUT`: the static tree served by nginx alone (its own
//! `nginx.conf`, mkimage not running) answers a machine's whole boot — the
//! dispatcher, the machine's own script or the default, and every artifact
//! the script names, byte for byte by sha256 — and bad input is refused
//! with a clear error that writes nothing.

mod nginx_support;
mod serve_support;

use std::net::SocketAddr;
use std::process::Command;

use nginx_support::{free_port, Nginx};
use serve_support::{build, build_bootable, download, get, kernel_arg, pseudo_random, require, url_path};

fn publish(cwd: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mkimage")).current_dir(cwd).arg("publish").args(args).output().expect("run mkimage publish")
}

#[test]
fn published_tree_boots_through_nginx_alone() {
    require("nginx", "nginx");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("builds");
    std::fs::create_dir(&dir).unwrap();
    let base = build_bootable(&dir, &pseudo_random(3 << 20, 11));
    let rescue = build(&dir, "overlay", "rescue", "rescue.cpio.gz", &pseudo_random(50_000, 12), &[&base]);
    std::fs::write(
        tmp.path().join("boot.yml"),
        "default: plain\nprofiles:\n  - name: plain\n  - name: rescue\n    overlays: [rescue]\n    args: rootsize=1G\n    macs: ['52:54:00:AA:00:01']\n",
    )
    .unwrap();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let out = tmp.path().join("www");
    let url = format!("http://{listen}/");
    let done = publish(tmp.path(), &[out.to_str().unwrap(), "--dir", dir.to_str().unwrap(), "--boot-config", "boot.yml", "--public-url", &url]);
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    assert!(String::from_utf8_lossy(&done.stdout).contains("published 4 artifacts, 1 machine scripts"), "{}", String::from_utf8_lossy(&done.stdout));
    for f in ["boot.ipxe", "default.ipxe", "boot/52-54-00-aa-00-01.ipxe", "nginx.conf"] {
        assert!(out.join(f).is_file(), "{f} missing from the tree");
    }
    // Nothing of mkimage runs from here on: the build dir goes away too.
    std::fs::rename(&dir, tmp.path().join("gone")).unwrap();
    let conf = std::fs::read_to_string(out.join("nginx.conf")).unwrap();
    assert!(conf.contains(&format!("listen {};", listen.port())), "{conf}");
    let nginx = Nginx::start(tmp.path(), listen, &conf.replace(&format!("listen {};", listen.port()), &format!("listen {listen};")));

    let dispatcher = get(nginx.addr, "/boot.ipxe");
    assert_eq!(dispatcher.status, 200);
    assert!(dispatcher.text().contains("chain --replace boot/${netX/mac:hexhyp}.ipxe || chain --replace default.ipxe"), "{}", dispatcher.text());

    // The named machine: its own profile; an unknown one: the default (try_files).
    let own = get(nginx.addr, "/boot/52-54-00-aa-00-01.ipxe").text();
    assert!(own.contains("profile rescue") && own.contains(" rootsize=1G"), "{own}");
    assert_eq!(kernel_arg(&own, "overlayfs.sha256").as_deref(), Some(rescue.sha256.as_str()));
    assert_eq!(kernel_arg(&own, "mkimage.api"), None, "a static tree has no node registry to report to: {own}");
    let other = get(nginx.addr, "/boot/52-54-00-00-00-99.ipxe");
    assert_eq!(other.status, 200);
    assert!(other.text().contains("profile plain") && !other.text().contains("overlayfs="), "{}", other.text());

    // Every artifact the scripts name is there, by content, immutable.
    for script in [&own, &other.text()] {
        let kernel_line = script.lines().find(|l| l.starts_with("kernel ")).unwrap();
        let mut urls: Vec<String> = vec![kernel_line.split_whitespace().nth(1).unwrap().to_string()];
        urls.push(script.lines().find_map(|l| l.strip_prefix("initrd --name initrd ")).unwrap().split_whitespace().next().unwrap().to_string());
        urls.push(kernel_arg(script, "basefs").unwrap());
        urls.extend(kernel_arg(script, "overlayfs").into_iter().flat_map(|o| o.split(',').map(String::from).collect::<Vec<_>>()));
        for u in urls {
            assert!(u.starts_with(&format!("http://{listen}/sha256/")), "{u}");
            let path = url_path(&u);
            let want = path.split('/').nth(2).unwrap();
            let (status, _, sha) = download(nginx.addr, path);
            assert_eq!((status, sha.as_str()), (200, want), "{path}");
            let head = serve_support::request(nginx.addr, "HEAD", path, &[]);
            assert!(head.header("Cache-Control").is_some_and(|c| c.contains("immutable")), "{:?}", head.headers);
        }
    }
    assert_eq!(get(nginx.addr, "/nginx.conf").status, 404);
}

#[test]
fn bad_input_is_refused_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("builds");
    std::fs::create_dir(&dir).unwrap();
    let out = tmp.path().join("www");
    let o = |args: &[&str]| publish(tmp.path(), args);
    let url = "http://10.0.0.5:8081";
    let r = o(&[out.to_str().unwrap(), "--dir", dir.to_str().unwrap(), "--public-url", url]);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("; build one first"), "{}", String::from_utf8_lossy(&r.stderr));
    build_bootable(&dir, b"basefs");
    let r = o(&[out.to_str().unwrap(), "--dir", dir.to_str().unwrap(), "--public-url", "http://x/$y"]);
    assert_eq!(r.status.code(), Some(2), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(String::from_utf8_lossy(&r.stderr).contains("--public-url"), "{}", String::from_utf8_lossy(&r.stderr));
    // A basefs changed under its manifest entry (a build in progress).
    std::fs::write(dir.join("base.squashfs"), b"changed").unwrap();
    std::fs::remove_dir_all(dir.join(".state")).unwrap();
    let r = o(&[out.to_str().unwrap(), "--dir", dir.to_str().unwrap(), "--public-url", url]);
    assert!(String::from_utf8_lossy(&r.stderr).contains("a build in progress?"), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(!out.join("boot.ipxe").exists() && !out.join("default.ipxe").exists());
}
