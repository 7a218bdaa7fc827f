//! Which reply for which client, decoded back with dhcproto as a client would.

use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder};

use super::answer::{answer, classify, Client, Config, Ignored, Port};
use super::packet::{parse, tests::discover};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
const UUID: [u8; 17] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];

fn cfg() -> Config {
    Config {
        server: SERVER,
        base_url: "http://10.9.0.1:8080".into(),
        efi_file: super::EFI_FILE.into(),
        uki: None,
    }
}

fn peer() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 150), 68)
}

/// The reply to a DHCPDISCOVER with these options on port 67, decoded.
fn offer(extra: &[(u8, &[u8])]) -> (Client, Message, SocketAddrV4) {
    let req = parse(&discover(extra)).unwrap();
    let a = answer(&req, Port::Dhcp, peer(), &cfg()).unwrap();
    (
        a.client,
        Message::decode(&mut Decoder::new(&a.bytes)).unwrap(),
        a.to,
    )
}

fn opt(m: &Message, code: OptionCode) -> Option<&DhcpOption> {
    m.opts().get(code)
}

fn file(m: &Message) -> String {
    String::from_utf8_lossy(m.fname().unwrap_or_default())
        .trim_end_matches('\0')
        .to_string()
}

/// What every proxy reply carries: no address, the server named, PXEClient.
fn assert_proxy_reply(m: &Message, kind: MessageType, class: &[u8]) {
    assert_eq!(m.opcode(), dhcproto::v4::Opcode::BootReply);
    assert_eq!(m.xid(), 0x1234_5678);
    assert_eq!(m.chaddr(), [0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    assert_eq!(
        m.yiaddr(),
        Ipv4Addr::UNSPECIFIED,
        "a proxy hands out no address"
    );
    assert_eq!(m.siaddr(), SERVER);
    assert_eq!(
        opt(m, OptionCode::MessageType),
        Some(&DhcpOption::MessageType(kind))
    );
    assert_eq!(
        opt(m, OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER))
    );
    assert_eq!(
        opt(m, OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(class.to_vec()))
    );
    assert!(
        opt(m, OptionCode::AddressLeaseTime).is_none() && opt(m, OptionCode::SubnetMask).is_none()
    );
}

#[test]
fn bios_pxe_gets_undionly_over_tftp_without_discovery() {
    let (client, m, to) = offer(&[
        (60, b"PXEClient:Arch:00000:UNDI:002001"),
        (93, &[0, 0]),
        (97, &UUID),
    ]);
    assert_eq!(client, Client::BiosPxe);
    assert_proxy_reply(&m, MessageType::Offer, b"PXEClient");
    assert_eq!(file(&m), "undionly.kpxe");
    assert_eq!(
        opt(&m, OptionCode::VendorExtensions),
        Some(&DhcpOption::VendorExtensions(vec![6, 1, 8, 255]))
    );
    assert_eq!(
        opt(&m, OptionCode::ClientMachineIdentifier),
        Some(&DhcpOption::ClientMachineIdentifier(UUID.to_vec()))
    );
    assert_eq!(
        to,
        SocketAddrV4::new(Ipv4Addr::BROADCAST, 68),
        "no address yet: broadcast"
    );
    assert!(m.flags().broadcast());
}

#[test]
fn with_uefi_boot_shim_uefi_pxe_gets_shim_and_bios_keeps_ipxe() {
    let shim = Config {
        efi_file: "shimx64.efi".into(),
        ..cfg()
    };
    let uefi = parse(&discover(&[
        (60, b"PXEClient:Arch:00007:UNDI:003000"),
        (93, &[0, 7]),
    ]))
    .unwrap();
    assert_eq!(
        answer(&uefi, Port::Dhcp, peer(), &shim).unwrap().file,
        "shimx64.efi"
    );
    let bios = parse(&discover(&[(60, b"PXEClient:Arch:00000:UNDI:002001")])).unwrap();
    assert_eq!(
        answer(&bios, Port::Dhcp, peer(), &shim).unwrap().file,
        "undionly.kpxe"
    );
}

#[test]
fn uefi_pxe_gets_ipxe_efi_over_tftp_and_no_option_43() {
    for arch in [7u8, 9] {
        let class = format!("PXEClient:Arch:0000{arch}:UNDI:003000");
        let (client, m, _) = offer(&[(60, class.as_bytes()), (93, &[0, arch])]);
        assert_eq!(client, Client::UefiPxe);
        assert_proxy_reply(&m, MessageType::Offer, b"PXEClient");
        assert_eq!(file(&m), "ipxe.efi");
        assert!(
            opt(&m, OptionCode::VendorExtensions).is_none(),
            "UEFI asks again on 4011"
        );
        assert!(
            opt(&m, OptionCode::ClientMachineIdentifier).is_none(),
            "no UUID asked, none echoed"
        );
    }
}

#[test]
fn uefi_http_boot_gets_ipxe_efi_over_http() {
    let (client, m, _) = offer(&[(60, b"HTTPClient:Arch:00016:UNDI:003001"), (93, &[0, 16])]);
    assert_eq!(client, Client::UefiHttp);
    assert_proxy_reply(&m, MessageType::Offer, b"HTTPClient");
    assert_eq!(file(&m), "http://10.9.0.1:8080/ipxe/ipxe.efi");
}

#[test]
fn ipxe_gets_the_boot_script_with_its_mac() {
    // iPXE's bare user class, and the RFC 3004 form; on BIOS and UEFI alike.
    for (user_class, arch) in [(&b"iPXE"[..], 0u8), (&b"\x04iPXE"[..], 7)] {
        let (client, m, _) = offer(&[
            (60, b"PXEClient:Arch:00000:UNDI:002001"),
            (77, user_class),
            (93, &[0, arch]),
            (175, &[0xb1, 1, 1]),
        ]);
        assert_eq!(client, Client::Ipxe);
        assert_proxy_reply(&m, MessageType::Offer, b"PXEClient");
        assert_eq!(
            file(&m),
            "http://10.9.0.1:8080/boot.ipxe?mac=52:54:00:12:34:56"
        );
        assert!(opt(&m, OptionCode::VendorExtensions).is_none());
    }
}

#[test]
fn a_long_url_goes_in_option_67() {
    let req = parse(&discover(&[(60, b"PXEClient"), (77, b"iPXE")])).unwrap();
    let long = Config {
        base_url: format!("http://boot.example.test/{}", "a".repeat(120)),
        ..cfg()
    };
    let a = answer(&req, Port::Dhcp, peer(), &long).unwrap();
    let m = Message::decode(&mut Decoder::new(&a.bytes)).unwrap();
    assert_eq!(m.fname(), None);
    assert_eq!(
        opt(&m, OptionCode::BootfileName),
        Some(&DhcpOption::BootfileName(a.file.clone().into_bytes()))
    );
}

#[test]
fn the_pxe_exchange_on_4011_is_acked_to_the_sender_with_the_boot_item() {
    let mut request = discover(&[
        (60, b"PXEClient:Arch:00007:UNDI:003000"),
        (93, &[0, 7]),
        (97, &UUID),
        (43, &[71, 4, 0x80, 0, 0, 0, 255]),
    ]);
    request[240 + 2] = 3; // DHCPREQUEST
    request[12..16].copy_from_slice(&[10, 9, 0, 150]); // ciaddr: it has its address now
    let req = parse(&request).unwrap();
    let from = SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 150), 4011);
    let a = answer(&req, Port::Pxe, from, &cfg()).unwrap();
    let m = Message::decode(&mut Decoder::new(&a.bytes)).unwrap();
    assert_eq!(a.to, from);
    assert_proxy_reply(&m, MessageType::Ack, b"PXEClient");
    assert_eq!(m.ciaddr(), Ipv4Addr::new(10, 9, 0, 150));
    assert_eq!(file(&m), "ipxe.efi");
    assert_eq!(
        opt(&m, OptionCode::VendorExtensions),
        Some(&DhcpOption::VendorExtensions(vec![
            71, 4, 0x80, 0, 0, 0, 255
        ]))
    );
    assert_eq!(
        opt(&m, OptionCode::ClientMachineIdentifier),
        Some(&DhcpOption::ClientMachineIdentifier(UUID.to_vec()))
    );
    // A DISCOVER on 4011, or a REQUEST on 67 (the site's exchange), is not ours.
    assert!(matches!(
        answer(&req, Port::Dhcp, from, &cfg()),
        Err(Ignored::Message(MessageType::Request, 67))
    ));
}

#[test]
fn relayed_requests_go_back_to_the_relay() {
    let mut request = discover(&[(60, b"PXEClient:Arch:00000:UNDI:002001")]);
    request[24..28].copy_from_slice(&[10, 1, 0, 1]);
    let a = answer(&parse(&request).unwrap(), Port::Dhcp, peer(), &cfg()).unwrap();
    assert_eq!(a.to, SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, 1), 67));
}

#[test]
fn other_clients_are_left_alone() {
    let ignored = |extra: &[(u8, &[u8])]| classify(&parse(&discover(extra)).unwrap()).unwrap_err();
    // The initrd's udhcpc, systemd-networkd, anything not PXE.
    assert!(matches!(
        ignored(&[(60, b"udhcp 1.35.0")]),
        Ignored::NotPxe(_)
    ));
    assert!(matches!(ignored(&[]), Ignored::NotPxe(_)));
    // iPXE without a PXE vendor class is not a netbooting client either.
    assert!(matches!(ignored(&[(77, b"iPXE")]), Ignored::NotPxe(_)));
    // 32-bit UEFI, ARM64 UEFI, 32-bit UEFI HTTP: no iPXE for them here.
    assert_eq!(
        ignored(&[(60, b"PXEClient:Arch:00006"), (93, &[0, 6])]),
        Ignored::Arch(6)
    );
    assert_eq!(ignored(&[(60, b"PXEClient:Arch:00011")]), Ignored::Arch(11));
    assert_eq!(
        ignored(&[(60, b"HTTPClient:Arch:00015"), (93, &[0, 15])]),
        Ignored::Arch(15)
    );
    // A truncated RFC 3004 user class is not iPXE.
    assert_eq!(
        classify(&parse(&discover(&[(60, b"PXEClient"), (77, b"\x09iPXE")])).unwrap()),
        Ok(Client::BiosPxe)
    );
}

#[test]
fn arch_is_read_off_the_vendor_class_when_option_93_is_missing() {
    let client = |class: &[u8]| classify(&parse(&discover(&[(60, class)])).unwrap());
    assert_eq!(
        client(b"PXEClient:Arch:00007:UNDI:003000"),
        Ok(Client::UefiPxe)
    );
    assert_eq!(client(b"PXEClient"), Ok(Client::BiosPxe));
    assert_eq!(client(b"HTTPClient:Arch:00016"), Ok(Client::UefiHttp));
}

/// `--uefi-boot shim`: shim for UEFI PXE, and for UEFI HTTP boot the UKI
/// this lookup names (or iPXE and the reason, when it names none).
fn secure(uki: Result<&'static str, &'static str>) -> Config {
    let lookup = move |mac: &str| {
        assert_eq!(mac, "52:54:00:12:34:56", "looked up by the packet's MAC");
        uki.map(str::to_string).map_err(str::to_string)
    };
    Config {
        efi_file: "shimx64.efi".into(),
        uki: Some(super::UkiLookup(std::sync::Arc::new(lookup))),
        ..cfg()
    }
}

/// A DHCPDISCOVER as edk2's HTTP boot or PXE client encodes it, by dhcproto.
fn client_discover(class: &str, arch: u16) -> Vec<u8> {
    use dhcproto::{Encodable, Encoder};
    let mut m = Message::new_with_id(
        0x1234_5678,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &[0x52, 0x54, 0, 0x12, 0x34, 0x56],
    );
    m.set_flags(dhcproto::v4::Flags::default().set_broadcast());
    let opts = m.opts_mut();
    opts.insert(DhcpOption::MessageType(MessageType::Discover));
    opts.insert(DhcpOption::ClassIdentifier(class.as_bytes().to_vec()));
    opts.insert(DhcpOption::ClientSystemArchitecture(arch.into()));
    opts.insert(DhcpOption::ClientMachineIdentifier(UUID.to_vec()));
    let mut bytes = Vec::new();
    m.encode(&mut Encoder::new(&mut bytes)).unwrap();
    bytes
}

#[test]
fn with_uefi_boot_shim_http_boot_gets_its_profiles_uki_and_pxe_keeps_shim() {
    let uki = "/sha256/aaaa/discovery.efi";
    let http = parse(&client_discover("HTTPClient:Arch:00016:UNDI:003001", 16)).unwrap();
    let a = answer(&http, Port::Dhcp, peer(), &secure(Ok(uki))).unwrap();
    let m = Message::decode(&mut Decoder::new(&a.bytes)).unwrap();
    assert_eq!(a.client, Client::UefiHttp);
    // edk2 takes a proxy offer only with option 60 `HTTPClient`.
    assert_proxy_reply(&m, MessageType::Offer, b"HTTPClient");
    assert_eq!(file(&m), format!("http://10.9.0.1:8080{uki}"));
    assert_eq!(a.note, None);

    let pxe = parse(&client_discover("PXEClient:Arch:00007:UNDI:003000", 7)).unwrap();
    let a = answer(&pxe, Port::Dhcp, peer(), &secure(Ok(uki))).unwrap();
    let m = Message::decode(&mut Decoder::new(&a.bytes)).unwrap();
    assert_proxy_reply(&m, MessageType::Offer, b"PXEClient");
    assert_eq!(file(&m), "shimx64.efi");
}

#[test]
fn an_http_boot_client_without_a_uki_gets_ipxe_and_the_reason_is_kept() {
    let http = parse(&client_discover("HTTPClient:Arch:00016:UNDI:003001", 16)).unwrap();
    let a = answer(
        &http,
        Port::Dhcp,
        peer(),
        &secure(Err("profile x has no signed UKI")),
    )
    .unwrap();
    let m = Message::decode(&mut Decoder::new(&a.bytes)).unwrap();
    assert_proxy_reply(&m, MessageType::Offer, b"HTTPClient");
    assert_eq!(file(&m), "http://10.9.0.1:8080/ipxe/ipxe.efi");
    assert_eq!(a.note.as_deref(), Some("profile x has no signed UKI"));
    // Without --uefi-boot shim nothing is looked up.
    let a = answer(&http, Port::Dhcp, peer(), &cfg()).unwrap();
    assert_eq!(a.file, "http://10.9.0.1:8080/ipxe/ipxe.efi");
    assert_eq!(a.note, None);
}
