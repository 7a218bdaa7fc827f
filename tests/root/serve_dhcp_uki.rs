//! `mkimage serve --proxy-dhcp --uefi-boot shim` and the index of signed
//! UKIs (`mkimage keys sign-ukis`) on a real link: a UEFI HTTP boot
//! client's DHCPDISCOVER (dhcproto-built, as edk2 sends it) gets the
//! content URL of its profile's UKI, picked by the packet's MAC, with
//! option 60 `HTTPClient`, and the URL serves the UKI's bytes; a UEFI PXE
//! client still gets shim; a machine whose profile has no UKI, or whose
//! UKI was signed for other artifacts, gets iPXE over HTTP.

use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{DhcpOption, MessageType, OptionCode};
use mkimage::artifact::{objects, Manifest};
use mkimage::serve::profiles::{for_machine, BootConfig};
use mkimage::serve::ukis::{inputs, Entry, Index};

use super::dhcp_link::*;
use crate::serve_support::{build_bootable, get, sha256_hex};

const BOOT_YML: &str = r#"default: plain
profiles:
  - name: signed
    macs: ["52:54:00:ab:cd:ef"]
  - name: plain
"#;

/// A DISCOVER from `mac` with this vendor class and architecture.
fn discover(xid: u32, class: &str, arch: u16, mac: [u8; 6]) -> Vec<u8> {
    let mut p = request(
        MessageType::Discover,
        Ipv4Addr::UNSPECIFIED,
        xid,
        vendor(class, arch),
    );
    p[28..34].copy_from_slice(&mac);
    p
}

#[test]
fn http_boot_clients_get_their_profiles_signed_uki_and_pxe_clients_shim() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    build_bootable(d, b"basefs");
    let boot_yml = d.join("boot.yml");
    std::fs::write(&boot_yml, BOOT_YML).unwrap();
    let config = BootConfig::load(&boot_yml).unwrap();
    let resolved = for_machine(
        Some(&config),
        Some("52:54:00:ab:cd:ef"),
        &Manifest::load(d).unwrap(),
    )
    .unwrap();
    assert_eq!(resolved.profile, "signed");
    let uki = b"MZ a signed UKI".to_vec();
    let sha = sha256_hex(&uki);
    std::fs::write(d.join("staged.efi"), &uki).unwrap();
    objects::add(d, &d.join("staged.efi"), &sha).unwrap();
    let mut index = Index::default();
    index.profiles.insert(
        "signed".into(),
        Entry {
            sha256: sha.clone(),
            name: "signed.efi".into(),
            inputs: inputs(&resolved),
            base_url: "http://10.9.0.1:1".into(),
        },
    );
    index.save(d).unwrap();
    let link = Link::start_in(
        dir,
        &[
            "--uefi-boot",
            "shim",
            "--boot-config",
            boot_yml.to_str().unwrap(),
        ],
    );
    let base = format!("http://{}", link.http);
    let dhcp = udp_on("cli0", SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68));
    let to_67 = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
    let ask = |xid: u32, class: &str, arch: u16, mac: [u8; 6]| {
        dhcp.send_to(&discover(xid, class, arch, mac), to_67)
            .unwrap();
        let m = reply(&dhcp, xid);
        let class = match m.opts().get(OptionCode::ClassIdentifier) {
            Some(DhcpOption::ClassIdentifier(c)) => String::from_utf8_lossy(c).into_owned(),
            _ => String::new(),
        };
        (file(&m), class)
    };
    let http = "HTTPClient:Arch:00016:UNDI:003001";

    let (url, class) = ask(1, http, 16, MAC);
    assert_eq!(url, format!("{base}/sha256/{sha}/signed.efi"));
    assert_eq!(class, "HTTPClient", "edk2 needs option 60 HTTPClient");
    let got = get(link.http, &format!("/sha256/{sha}/signed.efi"));
    assert_eq!((got.status, got.body), (200, uki));

    let pxe = ask(2, "PXEClient:Arch:00007:UNDI:003000", 7, MAC);
    assert_eq!(pxe, ("shimx64.efi".to_string(), "PXEClient".to_string()));

    // Another machine: profile `plain`, which has no UKI: iPXE over HTTP.
    let other = [0x52, 0x54, 0, 0, 0, 2];
    let (url, class) = ask(3, http, 16, other);
    assert_eq!(url, format!("{base}/ipxe/ipxe.efi"));
    assert_eq!(class, "HTTPClient");

    // A UKI signed for other artifacts than its profile names now: stale.
    let mut stale = index.clone();
    stale.profiles.get_mut("signed").unwrap().inputs[0] = "0".repeat(64);
    stale.save(&link_dir(&boot_yml)).unwrap();
    assert_eq!(ask(4, http, 16, MAC).0, format!("{base}/ipxe/ipxe.efi"));
    index.save(&link_dir(&boot_yml)).unwrap();
    assert_eq!(
        ask(5, http, 16, MAC).0,
        format!("{base}/sha256/{sha}/signed.efi")
    );
}

/// The served dir (the boot config lives in it).
fn link_dir(boot_yml: &std::path::Path) -> std::path::PathBuf {
    boot_yml.parent().unwrap().to_path_buf()
}
