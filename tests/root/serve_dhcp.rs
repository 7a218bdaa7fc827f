//! `mkimage serve --proxy-dhcp` on a real link: the server runs in a
//! network namespace of its own on one end of a veth pair, the test is the
//! client on the other end (its thread in a second private namespace), and
//! speaks DHCP as each kind of firmware does — broadcast DISCOVERs on port
//! 67 from a client without an address, the PXE exchange on 4011 — with
//! malformed and hostile packets in between. Then `/metrics` must count all
//! of it and the server must still answer. A real DHCP client, busybox
//! udhcpc, gets nothing as itself and each firmware's offer dressed as that
//! firmware. Also: the iPXE binaries over HTTP (UEFI HTTP boot), and the
//! flag's usage errors.

use crate::serve_support;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::dhcp_link::*;
use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder};
use serve_support::{get, require, Server};

#[test]
fn proxy_dhcp_answers_each_firmware_on_a_real_link_and_survives_garbage() {
    let link = Link::start();
    let http = link.http;
    discover_as_each_firmware_between_garbage(http);
    pxe_exchange_on_4011();
    the_named_files_are_served(http);
    everything_is_counted(http);
}

/// What each firmware sends (xid, options), and the vendor class and boot
/// file its offer must carry.
fn firmware_cases(base: &str) -> Vec<(u32, Vec<DhcpOption>, &'static str, String)> {
    vec![
        (
            1,
            vendor("PXEClient:Arch:00000:UNDI:002001", 0),
            "PXEClient",
            "undionly.kpxe".into(),
        ),
        (
            2,
            vendor("PXEClient:Arch:00007:UNDI:003000", 7),
            "PXEClient",
            "ipxe.efi".into(),
        ),
        (
            3,
            vendor("HTTPClient:Arch:00016:UNDI:003001", 16),
            "HTTPClient",
            format!("{base}/ipxe/ipxe.efi"),
        ),
        (
            4,
            [
                vendor("PXEClient:Arch:00000:UNDI:002001", 0),
                vec![DhcpOption::UserClass(b"iPXE".to_vec())],
            ]
            .concat(),
            "PXEClient",
            format!("{base}/boot.ipxe?mac=52:54:00:ab:cd:ef"),
        ),
    ]
}

/// Malformed and hostile packets: empty, junk, a bad hardware length, no
/// magic cookie, an option running past the end, an oversized datagram.
fn hostile_packets() -> Vec<Vec<u8>> {
    vec![
        vec![],
        vec![1; 100],
        {
            let mut p = request(
                MessageType::Discover,
                Ipv4Addr::UNSPECIFIED,
                9,
                vendor("PXEClient", 0),
            );
            p[2] = 255;
            p
        },
        {
            let mut p = request(
                MessageType::Discover,
                Ipv4Addr::UNSPECIFIED,
                9,
                vendor("PXEClient", 0),
            );
            p[236] = 0;
            p
        },
        {
            let mut p = request(
                MessageType::Discover,
                Ipv4Addr::UNSPECIFIED,
                9,
                vendor("PXEClient", 0),
            );
            p.truncate(250);
            p.extend([60, 255, b'x']);
            p
        },
        vec![0xff; 4000],
    ]
}

/// A proxy's OFFER: no address, this server, the client's vendor class.
fn assert_proxy_offer(m: &Message, class: &str) {
    assert_eq!(m.opcode(), Opcode::BootReply);
    assert_eq!(
        m.yiaddr(),
        Ipv4Addr::UNSPECIFIED,
        "a proxy gives no address"
    );
    assert_eq!(
        m.opts().get(OptionCode::MessageType),
        Some(&DhcpOption::MessageType(MessageType::Offer))
    );
    assert_eq!(
        m.opts().get(OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER))
    );
    assert_eq!(
        m.opts().get(OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(class.as_bytes().to_vec()))
    );
    assert_eq!(m.siaddr(), SERVER);
}

/// No address yet: broadcast from port 68, as firmware does, each
/// firmware's DISCOVER after a hostile packet; then garbage, a DISCOVER
/// that is not PXE, and the server still answers.
fn discover_as_each_firmware_between_garbage(http: SocketAddr) {
    let dhcp = udp_on("cli0", SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68));
    let to_67 = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
    let cases = firmware_cases(&format!("http://{http}"));
    let hostile = hostile_packets();
    for ((xid, opts, class, want), bad) in cases.into_iter().zip(hostile.iter().cycle()) {
        dhcp.send_to(bad, to_67).unwrap();
        dhcp.send_to(
            &request(MessageType::Discover, Ipv4Addr::UNSPECIFIED, xid, opts),
            to_67,
        )
        .unwrap();
        let m = reply(&dhcp, xid);
        assert_proxy_offer(&m, class);
        assert_eq!(file(&m), want, "xid {xid}");
    }
    for bad in &hostile[4..] {
        dhcp.send_to(bad, to_67).unwrap();
    }
    // Not PXE (the booted system's DHCP client): no reply, counted as ignored.
    dhcp.send_to(
        &request(
            MessageType::Discover,
            Ipv4Addr::UNSPECIFIED,
            5,
            vendor("udhcp 1.35.0", 0),
        ),
        to_67,
    )
    .unwrap();
    // One socket, one task: once this is answered, all of the above was read.
    dhcp.send_to(
        &request(
            MessageType::Discover,
            Ipv4Addr::UNSPECIFIED,
            7,
            vendor("PXEClient", 0),
        ),
        to_67,
    )
    .unwrap();
    assert_eq!(
        file(&reply(&dhcp, 7)),
        "undionly.kpxe",
        "the server still answers"
    );
}

/// The PXE exchange: with its address, unicast to the server's port 4011.
fn pxe_exchange_on_4011() {
    let pxe = udp_on("cli0", SocketAddrV4::new(CLIENT, 0));
    let uuid = vec![0u8; 17];
    let mut opts = vendor("PXEClient:Arch:00007:UNDI:003000", 7);
    opts.push(DhcpOption::ClientMachineIdentifier(uuid.clone()));
    pxe.send_to(&[0u8; 300], SocketAddrV4::new(SERVER, 4011))
        .unwrap();
    pxe.send_to(
        &request(MessageType::Request, CLIENT, 6, opts),
        SocketAddrV4::new(SERVER, 4011),
    )
    .unwrap();
    let ack = reply(&pxe, 6);
    assert_eq!(
        ack.opts().get(OptionCode::MessageType),
        Some(&DhcpOption::MessageType(MessageType::Ack))
    );
    assert_eq!(
        ack.opts().get(OptionCode::ClientMachineIdentifier),
        Some(&DhcpOption::ClientMachineIdentifier(uuid))
    );
    assert_eq!(file(&ack), "ipxe.efi");
}

/// The file each answer names, as that client fetches it: Debian's
/// ipxe.efi is a symlink out of --ipxe-dir (to /boot), and is served.
fn the_named_files_are_served(http: SocketAddr) {
    for name in ["undionly.kpxe", "ipxe.efi"] {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "60"])
            .arg(format!("tftp://{SERVER}/{name}"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "TFTP {name}: curl exit {:?}",
            out.status.code()
        );
        assert_eq!(
            out.stdout,
            std::fs::read(Path::new(IPXE_DIR).join(name)).unwrap(),
            "TFTP {name}"
        );
    }
    let efi = get(http, "/ipxe/ipxe.efi");
    assert_eq!(efi.status, 200);
    assert_eq!(
        efi.body,
        std::fs::read(Path::new(IPXE_DIR).join("ipxe.efi")).unwrap(),
        "HTTP ipxe.efi"
    );
}

/// Everything counted, and the server still answers.
fn everything_is_counted(http: SocketAddr) {
    let metrics = get(http, "/metrics").text();
    for line in [
        "mkimage_dhcp_replies_total{client=\"bios-pxe\"} 2",
        "mkimage_dhcp_replies_total{client=\"uefi-pxe\"} 2",
        "mkimage_dhcp_replies_total{client=\"uefi-http\"} 1",
        "mkimage_dhcp_replies_total{client=\"ipxe\"} 1",
        "mkimage_dhcp_dropped_total{reason=\"truncated\"} 2",
        "mkimage_dhcp_dropped_total{reason=\"hardware\"} 1",
        "mkimage_dhcp_dropped_total{reason=\"no_magic\"} 1",
        "mkimage_dhcp_dropped_total{reason=\"option_overrun\"} 1",
        "mkimage_dhcp_dropped_total{reason=\"not_request\"} 2",
        "mkimage_dhcp_ignored_total 1",
    ] {
        assert!(
            metrics.contains(&format!("{line}\n")),
            "{line} missing from /metrics:\n{metrics}"
        );
    }
}

/// busybox udhcpc on `cli0`, sending DISCOVERs built by its own code (two,
/// a second apart, then it gives up), with ARGS' options.
fn udhcpc(args: &[&str]) -> Child {
    Command::new("busybox")
        .args([
            "udhcpc",
            "-f",
            "-n",
            "-q",
            "-i",
            "cli0",
            "-t",
            "2",
            "-T",
            "1",
            "-s",
            "/bin/true",
        ])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The next OFFER to this test's MAC on `socket` (port 68).
fn offer_to_us(socket: &UdpSocket) -> Message {
    let mut buf = [0u8; 2048];
    loop {
        let (n, _) = socket
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("no offer to udhcpc: {e}"));
        let m = Message::decode(&mut Decoder::new(&buf[..n])).unwrap();
        if m.chaddr().get(..6) == Some(&MAC[..])
            && m.opts().get(OptionCode::MessageType)
                == Some(&DhcpOption::MessageType(MessageType::Offer))
        {
            return m;
        }
    }
}

fn metric(http: SocketAddr, line: &str) -> u64 {
    let text = get(http, "/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or(0)
}

/// A real DHCP client, busybox udhcpc (what the initrd runs), against the
/// proxy on a real link. As itself (vendor class `udhcp …`) it gets nothing
/// from the proxy, which counts both its DISCOVERs as ignored — the proxy
/// leaves ordinary clients to the site's server. Dressed as each firmware
/// with its own options (`-V` vendor class, `-x` option 93 architecture,
/// option 77 user class), its DISCOVER gets that firmware's offer.
#[test]
fn proxy_dhcp_answers_busybox_udhcpc_only_when_it_asks_to_boot() {
    require("busybox", "busybox-static");
    let link = Link::start();
    let offers = udp_on("cli0", SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68));
    plain_udhcpc_gets_nothing(link.http, &offers);
    dressed_udhcpc_gets_each_firmwares_offer(link.http, &offers);
}

/// As itself, udhcpc gets no lease; both its DISCOVERs are counted as
/// ignored, and only the test's own PXE DISCOVER is answered.
fn plain_udhcpc_gets_nothing(http: SocketAddr, offers: &UdpSocket) {
    let mut plain = udhcpc(&[]);
    let status = plain.wait().unwrap();
    assert!(
        !status.success(),
        "udhcpc got a lease from a proxy that hands out no addresses"
    );
    // One socket, one task: once this is answered, udhcpc's DISCOVERs were read.
    let to_67 = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
    offers
        .send_to(
            &request(
                MessageType::Discover,
                Ipv4Addr::UNSPECIFIED,
                8,
                vendor("PXEClient", 0),
            ),
            to_67,
        )
        .unwrap();
    assert_eq!(file(&reply(offers, 8)), "undionly.kpxe");
    assert_eq!(
        metric(http, "mkimage_dhcp_ignored_total"),
        2,
        "udhcpc's two DISCOVERs"
    );
    assert_eq!(
        metric(http, "mkimage_dhcp_replies_total{client=\"bios-pxe\"}"),
        1,
        "nothing but our own DISCOVER was answered"
    );
}

/// Dressed as each firmware, udhcpc's DISCOVER gets that firmware's offer.
fn dressed_udhcpc_gets_each_firmwares_offer(http: SocketAddr, offers: &UdpSocket) {
    let base = format!("http://{http}");
    let cases: [(&[&str], &str, String); 4] = [
        (
            &["-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000"],
            "PXEClient",
            "undionly.kpxe".into(),
        ),
        (
            &["-V", "PXEClient:Arch:00007:UNDI:003000", "-x", "0x5d:0007"],
            "PXEClient",
            "ipxe.efi".into(),
        ),
        (
            &["-V", "HTTPClient:Arch:00016:UNDI:003001", "-x", "0x5d:0010"],
            "HTTPClient",
            format!("{base}/ipxe/ipxe.efi"),
        ),
        (
            &[
                "-V",
                "PXEClient:Arch:00000:UNDI:002001",
                "-x",
                "0x4d:69505845",
            ],
            "PXEClient",
            format!("{base}/boot.ipxe?mac=52:54:00:ab:cd:ef"),
        ),
    ];
    for (args, class, want) in cases {
        let client = Children(vec![udhcpc(args)]);
        let m = offer_to_us(offers);
        drop(client);
        assert_eq!(file(&m), want, "udhcpc {args:?}");
        assert_eq!(
            m.yiaddr(),
            Ipv4Addr::UNSPECIFIED,
            "a proxy gives no address"
        );
        assert_eq!(m.siaddr(), SERVER);
        assert_eq!(
            m.opts().get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(SERVER))
        );
        assert_eq!(
            m.opts().get(OptionCode::ClassIdentifier),
            Some(&DhcpOption::ClassIdentifier(class.as_bytes().to_vec()))
        );
    }
}

#[test]
fn ipxe_binaries_are_served_over_http_from_the_ipxe_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, ipxe) = (tmp.path().join("builds"), tmp.path().join("ipxe"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&ipxe).unwrap();
    std::fs::write(ipxe.join("ipxe.efi"), b"MZ efi").unwrap();
    std::fs::write(dir.join("secret"), b"not under /ipxe/").unwrap();
    let server = Server::start(tmp.path(), &dir, &["--ipxe-dir", ipxe.to_str().unwrap()]);
    let r = get(server.http, "/ipxe/ipxe.efi");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"MZ efi"[..]));
    assert!(r.header("ETag").is_some());
    assert_eq!(get(server.http, "/ipxe/undionly.kpxe").status, 404);
    assert_eq!(get(server.http, "/ipxe/../builds/secret").status, 403);
    assert_eq!(get(server.http, "/ipxe/%2e%2e/builds/secret").status, 403);
}

#[test]
fn proxy_dhcp_usage_errors_name_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let serve = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_mkimage"))
            .current_dir(tmp.path())
            .args(["serve", "--dir"])
            .arg(tmp.path())
            .args(args)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, err) = serve(&[
        "--http",
        "127.0.0.1:0",
        "--tftp",
        "off",
        "--proxy-dhcp",
        "lo",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--proxy-dhcp") && err.contains("--tftp off"),
        "{err}"
    );
    let (code, err) = serve(&[
        "--http",
        "127.0.0.1:0",
        "--tftp",
        "127.0.0.1:0",
        "--proxy-dhcp",
        "lo",
        "--ipxe-dir",
        tmp.path().to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("undionly.kpxe") && err.contains("apt-get install -y ipxe"),
        "{err}"
    );
    let (code, err) = serve(&[
        "--http",
        "127.0.0.1:0",
        "--tftp",
        "127.0.0.1:0",
        "--proxy-dhcp",
        "nosuch0",
        "--ipxe-dir",
        IPXE_DIR,
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("nosuch0: no such network interface") && err.contains("lo"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
