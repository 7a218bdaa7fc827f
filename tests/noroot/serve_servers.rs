//! The boot config's server list: `/boot.ipxe` gives every listed server a
//! try (in order, or the client subnet's list) with a console line at each
//! fallback, and hands the list to the init as `mkimage.servers=`; a bad
//! list is refused at startup naming the fix.

use crate::serve_support;

use std::process::Command;

use serve_support::{build_bootable, get, kernel_arg, Server};

#[test]
fn scripts_list_the_servers_in_order_or_by_subnet() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("builds");
    std::fs::create_dir(&dir).unwrap();
    let e = build_bootable(&dir, b"basefs");
    let yml = tmp.path().join("boot.yml");
    std::fs::write(
        &yml,
        "servers: [http://10.0.0.5:8080, 'http://10.0.0.6:8080/']\nprofiles:\n  - name: p\n",
    )
    .unwrap();
    let server = Server::start(
        tmp.path(),
        &dir,
        &["--tftp", "off", "--boot-config", yml.to_str().unwrap()],
    );
    let s = get(server.http, "/boot.ipxe?mac=52:54:00:00:00:01").text();
    let kernels: Vec<&str> = s.lines().filter(|l| l.starts_with("kernel ")).collect();
    assert_eq!(kernels.len(), 2, "{s}");
    assert_eq!(
        kernel_arg(&s, "basefs"),
        Some(format!(
            "http://10.0.0.5:8080/sha256/{}/base.squashfs",
            e.sha256
        ))
    );
    assert!(
        kernels[1].contains(&format!(
            " basefs=http://10.0.0.6:8080/sha256/{}/base.squashfs ",
            e.sha256
        )),
        "{s}"
    );
    assert_eq!(
        kernel_arg(&s, "mkimage.servers").as_deref(),
        Some("http://10.0.0.5:8080,http://10.0.0.6:8080")
    );
    assert!(s.contains("echo mkimage: server http://10.0.0.5:8080 failed, falling back to http://10.0.0.6:8080\n"), "{s}");

    // Re-read per request: a subnet list for this client (127.0.0.1) wins.
    std::fs::write(&yml, "servers: [http://10.0.0.5:8080]\nservers_by_subnet:\n  127.0.0.0/8: [http://127.0.0.9:80, http://10.0.0.5:8080]\n  10.0.0.0/8: [http://x]\nprofiles:\n  - name: p\n").unwrap();
    let s = get(server.http, "/boot.ipxe").text();
    assert_eq!(
        kernel_arg(&s, "mkimage.servers").as_deref(),
        Some("http://127.0.0.9:80,http://10.0.0.5:8080"),
        "{s}"
    );
    // One server: the plain single-server script.
    std::fs::write(
        &yml,
        "servers: [http://10.0.0.5:8080]\nprofiles:\n  - name: p\n",
    )
    .unwrap();
    let s = get(server.http, "/boot.ipxe").text();
    assert!(
        kernel_arg(&s, "mkimage.servers").is_none()
            && s.lines().filter(|l| l.starts_with("kernel ")).count() == 1,
        "{s}"
    );
    assert!(
        kernel_arg(&s, "basefs").is_some_and(|u| u.starts_with("http://10.0.0.5:8080/")),
        "{s}"
    );
}

#[test]
fn a_bad_server_list_is_refused_at_startup() {
    let tmp = tempfile::tempdir().unwrap();
    let yml = tmp.path().join("boot.yml");
    std::fs::write(
        &yml,
        "servers_by_subnet:\n  10.0.0.0/40: [http://x]\nprofiles:\n  - name: p\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mkimage"))
        .current_dir(tmp.path())
        .args([
            "serve",
            "--dir",
            ".",
            "--http",
            "127.0.0.1:0",
            "--tftp",
            "off",
            "--boot-config",
        ])
        .arg(&yml)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("10.0.0.0/40") && err.contains("ADDRESS/PREFIX"),
        "{err}"
    );
}
