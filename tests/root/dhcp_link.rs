//! The proxyDHCP's test link, shared by `serve_dhcp` and `serve_dhcp_uki`:
//! `mkimage serve --proxy-dhcp srv0` in a network namespace of its own, the
//! test's thread the client on the other end of a veth pair, and DHCP
//! packets built and read with dhcproto as firmware sends them.

use crate::serve_support;

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use nix::sys::socket::{
    bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
};
use serve_support::require;

pub const SERVER: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 50);
pub const MAC: [u8; 6] = [0x52, 0x54, 0, 0xab, 0xcd, 0xef];
pub const IPXE_DIR: &str = "/usr/lib/ipxe";

pub fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Children stopped by pid when the test ends, however it ends.
pub struct Children(pub Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }
}

/// A UDP socket tied to `dev`, bound to `addr`, allowed to broadcast.
pub fn udp_on(dev: &str, addr: SocketAddrV4) -> UdpSocket {
    let fd: OwnedFd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    setsockopt(&fd, sockopt::Broadcast, &true).unwrap();
    setsockopt(&fd, sockopt::BindToDevice, &OsString::from(dev)).unwrap();
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(addr),
    )
    .unwrap();
    let s = UdpSocket::from(fd);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// A request from MAC with these options (message type first).
pub fn request(kind: MessageType, ciaddr: Ipv4Addr, xid: u32, opts: Vec<DhcpOption>) -> Vec<u8> {
    let mut m = Message::new_with_id(
        xid,
        ciaddr,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &MAC,
    );
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    for o in opts {
        m.opts_mut().insert(o);
    }
    let mut buf = Vec::new();
    m.encode(&mut Encoder::new(&mut buf)).unwrap();
    buf
}

pub fn vendor(class: &str, arch: u16) -> Vec<DhcpOption> {
    vec![
        DhcpOption::ClassIdentifier(class.as_bytes().to_vec()),
        DhcpOption::ClientSystemArchitecture(arch.into()),
    ]
}

/// The reply with transaction id `xid` (others on the wire are skipped).
pub fn reply(socket: &UdpSocket, xid: u32) -> Message {
    let mut buf = [0u8; 2048];
    loop {
        let (n, _) = socket
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("no reply to xid {xid:#x}: {e}"));
        let m = Message::decode(&mut Decoder::new(&buf[..n])).unwrap();
        if m.xid() == xid {
            return m;
        }
    }
}

pub fn file(m: &Message) -> String {
    match m.opts().get(OptionCode::BootfileName) {
        Some(DhcpOption::BootfileName(b)) => String::from_utf8_lossy(b).into_owned(),
        _ => String::from_utf8_lossy(m.fname().unwrap_or_default())
            .trim_end_matches('\0')
            .to_string(),
    }
}

/// `mkimage serve --proxy-dhcp srv0` in a namespace of its own, joined by a
/// veth pair to this thread's private namespace (`cli0`, CLIENT, MAC);
/// stopped by pid when dropped.
pub struct Link {
    _children: Children,
    pub http: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Link {
    pub fn start() -> Link {
        Link::start_in(tempfile::tempdir().unwrap(), &[])
    }

    /// The server on `dir` (kept until the link drops), with `extra` flags.
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Link {
        preflight();
        // This test's thread (and what it spawns) gets a namespace of its own.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        run(Command::new("ip").args(["link", "set", "lo", "up"]));
        let mut children = Children(Vec::new());
        let holder = Command::new("unshare")
            .args(["--net", "--", "sleep", "infinity"])
            .spawn()
            .unwrap();
        let ns = format!("--net=/proc/{}/ns/net", holder.id());
        children.0.push(holder);
        let ours = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        while std::fs::read_link(ns.trim_start_matches("--net=")).unwrap() == ours {
            std::thread::yield_now();
        }
        let pid = children.0[0].id().to_string();
        let mac = MAC.map(|b| format!("{b:02x}")).join(":");
        run(Command::new("ip").args([
            "link", "add", "cli0", "address", &mac, "type", "veth", "peer", "name", "srv0",
            "netns", &pid,
        ]));
        run(Command::new("ip").args(["addr", "add", &format!("{CLIENT}/24"), "dev", "cli0"]));
        run(Command::new("ip").args(["link", "set", "cli0", "up"]));
        for args in [
            &["link", "set", "lo", "up"][..],
            &["addr", "add", &format!("{SERVER}/24"), "dev", "srv0"],
            &["link", "set", "srv0", "up"],
        ] {
            run(Command::new("nsenter").arg(&ns).arg("ip").args(args));
        }
        let http = start_server(&ns, dir.path(), extra, &mut children);
        Link {
            _children: children,
            http,
            _dir: dir,
        }
    }
}

/// Root, and the tools a link needs.
fn preflight() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (network namespaces): run the suite as root"
    );
    for (p, pkg) in [
        ("ip", "iproute2"),
        ("unshare", "util-linux"),
        ("nsenter", "util-linux"),
        ("curl", "curl"),
    ] {
        require(p, pkg);
    }
    assert!(
        Path::new(IPXE_DIR).join("ipxe.efi").is_file(),
        "{IPXE_DIR}/ipxe.efi is missing: apt-get install -y ipxe"
    );
}

/// `mkimage serve` inside the namespace `ns` (an `nsenter --net=` argument),
/// with the proxyDHCP on `srv0`; its HTTP address once it listens.
fn start_server(ns: &str, dir: &Path, extra: &[&str], children: &mut Children) -> SocketAddr {
    let mut server = Command::new("nsenter")
        .arg(ns)
        .arg(env!("CARGO_BIN_EXE_mkimage"))
        .args(["serve", "--dir"])
        .arg(dir)
        .args([
            "--http",
            &format!("{SERVER}:0"),
            "--tftp",
            &format!("{SERVER}:69"),
            "--proxy-dhcp",
            "srv0",
            "--ipxe-dir",
            IPXE_DIR,
        ])
        .args(extra)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(server.stdout.take().unwrap()));
    children.0.push(server);
    let mut http: Option<SocketAddr> = None;
    for line in lines.by_ref().map_while(Result::ok) {
        if let Some(a) = line.strip_prefix("listening http ") {
            http = a.parse().ok();
        }
        if line == format!("listening proxy-dhcp srv0 {SERVER}") {
            break;
        }
    }
    let http = http.expect("mkimage serve printed its HTTP address");
    std::thread::spawn(move || for _ in lines {});
    http
}
