//! What the proxyDHCP says to whom — pure, so every case is a unit test.
//!
//! A proxyDHCP answers beside the site's DHCP server and hands out no
//! address: its reply has `yiaddr` 0, names itself (option 54), says
//! `PXEClient` (option 60; `HTTPClient` for UEFI HTTP boot) and carries
//! only the boot file. Which file, by the client's own words:
//!
//! | client | how it says so | gets |
//! |---|---|---|
//! | iPXE | user class (77) `iPXE` | `BASE/boot.ipxe?mac=MAC` (HTTP) |
//! | UEFI HTTP boot, x86-64 | vendor class `HTTPClient`, arch 16 | `BASE/ipxe/ipxe.efi` (HTTP); with `--uefi-boot shim`, its profile's signed UKI `BASE/sha256/HEX/PROFILE.efi` when one is indexed (`serve::ukis`) |
//! | UEFI PXE, x86-64 | vendor class `PXEClient`, arch 7 or 9 | `ipxe.efi` (TFTP); `shimx64.efi` with `--uefi-boot shim` |
//! | BIOS PXE | vendor class `PXEClient`, arch 0 (or none) | `undionly.kpxe` (TFTP) |
//!
//! On port 67 a DHCPDISCOVER gets an OFFER, broadcast (the client has no
//! address yet) unless it came through a relay. BIOS PXE is told to skip
//! boot server discovery and load the file (option 43, discovery control
//! 8). UEFI firmware gets no option 43 — some ignore an offer that tries to
//! bypass discovery — so it asks again on port 4011 (the PXE exchange),
//! where a DHCPREQUEST gets an ACK, unicast back to where it came from,
//! with the boot item it asked for (43.71) echoed.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode};
use dhcproto::{Encodable, Encoder};

use super::packet::{options, Request};

/// The TFTP file BIOS PXE firmware chain-loads.
pub const BIOS_FILE: &str = "undionly.kpxe";
/// The TFTP (and HTTP) file UEFI x86-64 firmware chain-loads.
pub const EFI_FILE: &str = "ipxe.efi";
/// Where HTTP serves the iPXE binaries (from `--ipxe-dir`).
pub const HTTP_IPXE_PREFIX: &str = "/ipxe/";
/// A bootfile this long or longer goes in option 67, not the 128-byte `file` field.
const FILE_FIELD: usize = 128;
/// PXE vendor sub-options (option 43).
const DISCOVERY_CONTROL: u8 = 6;
const BOOT_ITEM: u8 = 71;
/// Discovery control bit 3: no menu, no discovery, load the boot file now.
const USE_BOOTFILE: u8 = 8;

/// Which kind of client asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    BiosPxe,
    UefiPxe,
    UefiHttp,
    Ipxe,
}

impl Client {
    /// Its metric and log label.
    pub fn label(self) -> &'static str {
        match self {
            Client::BiosPxe => "bios-pxe",
            Client::UefiPxe => "uefi-pxe",
            Client::UefiHttp => "uefi-http",
            Client::Ipxe => "ipxe",
        }
    }
}

/// The port a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// 67: the broadcast DHCP exchange.
    Dhcp,
    /// 4011: the PXE exchange, unicast once the client has its address.
    Pxe,
}

impl Port {
    pub fn number(self) -> u16 {
        match self {
            Port::Dhcp => 67,
            Port::Pxe => 4011,
        }
    }
}

/// A request that is not the proxy's to answer (counted, not an error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ignored {
    #[error("not a PXE or HTTP boot client (vendor class {0:?})")]
    NotPxe(String),
    #[error(
        "architecture {0} has no iPXE here (x86 BIOS 0, x86-64 UEFI 7/9, x86-64 UEFI HTTP 16)"
    )]
    Arch(u16),
    #[error("{0:?} on port {1} is not the proxy's to answer")]
    Message(MessageType, u16),
    #[error("cannot encode the reply: {0}")]
    Encode(String),
}

/// What the proxy knows about itself.
#[derive(Debug, Clone)]
pub struct Config {
    /// Its address on the interface it answers on (option 54, `siaddr`:
    /// where TFTP is).
    pub server: Ipv4Addr,
    /// The base of its HTTP URLs, e.g. `http://10.0.0.5:8080`.
    pub base_url: String,
    /// What UEFI PXE clients load over TFTP: `ipxe.efi`, or with
    /// `serve --uefi-boot shim` shim (the Secure Boot path, `secure_tftp`).
    pub efi_file: String,
    /// With `serve --uefi-boot shim`: what UEFI HTTP boot clients get
    /// instead of iPXE, by MAC.
    pub uki: Option<UkiLookup>,
}

/// The content path (`/sha256/HEX/PROFILE.efi`) of the signed UKI of the
/// profile a MAC boots, or why there is none (the client then gets iPXE).
#[derive(Clone)]
pub struct UkiLookup(pub Arc<UkiPath>);

/// MAC → the UKI's content path, or why there is none.
pub type UkiPath = dyn Fn(&str) -> Result<String, String> + Send + Sync;

impl std::fmt::Debug for UkiLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UkiLookup")
    }
}

/// A reply, where it goes, and what it told the client to load.
#[derive(Debug, Clone)]
pub struct Answer {
    pub client: Client,
    pub bytes: Vec<u8>,
    pub to: SocketAddrV4,
    pub file: String,
    /// Why an HTTP boot client got iPXE, not a UKI (for the log).
    pub note: Option<String>,
}

/// Who is asking, from options 60, 77 and 93.
pub fn classify(req: &Request) -> Result<Client, Ignored> {
    let class = String::from_utf8_lossy(&req.vendor_class).into_owned();
    let http = class.starts_with("HTTPClient");
    if !http && !class.starts_with("PXEClient") {
        return Err(Ignored::NotPxe(class));
    }
    if is_ipxe(&req.user_class) {
        return Ok(Client::Ipxe);
    }
    // Option 93, else the `Arch:NNNNN` field of the vendor class, else x86 BIOS.
    let arch = req
        .arch
        .or_else(|| {
            class
                .split(':')
                .skip_while(|f| *f != "Arch")
                .nth(1)
                .and_then(|a| a.parse().ok())
        })
        .unwrap_or(0);
    match (http, arch) {
        (true, 16) => Ok(Client::UefiHttp),
        (false, 0) => Ok(Client::BiosPxe),
        (false, 7 | 9) => Ok(Client::UefiPxe),
        (_, other) => Err(Ignored::Arch(other)),
    }
}

/// iPXE sends its user class as the bare string; RFC 3004 clients as
/// length-prefixed instances. Either counts.
fn is_ipxe(user_class: &[u8]) -> bool {
    if user_class == b"iPXE" {
        return true;
    }
    let mut rest = user_class;
    while let Some((&len, tail)) = rest.split_first() {
        let Some(instance) = tail.get(..len as usize) else {
            return false;
        };
        if instance == b"iPXE" {
            return true;
        }
        rest = &tail[len as usize..];
    }
    false
}

/// The reply to `req`, which came in on `port` from `peer`.
pub fn answer(
    req: &Request,
    port: Port,
    peer: SocketAddrV4,
    cfg: &Config,
) -> Result<Answer, Ignored> {
    let reply_type = match (port, req.kind) {
        (Port::Dhcp, MessageType::Discover) => MessageType::Offer,
        (Port::Pxe, MessageType::Request | MessageType::Inform) => MessageType::Ack,
        (_, other) => return Err(Ignored::Message(other, port.number())),
    };
    let client = classify(req)?;
    let mac = req.mac_string();
    let mut note = None;
    let file = match client {
        Client::BiosPxe => BIOS_FILE.to_string(),
        Client::UefiPxe => cfg.efi_file.clone(),
        Client::UefiHttp => match cfg.uki.as_ref().map(|uki| (uki.0)(&mac)) {
            Some(Ok(path)) => format!("{}{path}", cfg.base_url),
            no_uki => {
                note = no_uki.and_then(Result::err);
                format!("{}{HTTP_IPXE_PREFIX}{EFI_FILE}", cfg.base_url)
            }
        },
        Client::Ipxe => format!("{}/boot.ipxe?mac={mac}", cfg.base_url),
    };
    let to = match port {
        Port::Pxe => peer,
        Port::Dhcp if !req.giaddr().is_unspecified() => SocketAddrV4::new(req.giaddr(), 67),
        Port::Dhcp if !req.ciaddr().is_unspecified() => SocketAddrV4::new(req.ciaddr(), 68),
        Port::Dhcp => SocketAddrV4::new(Ipv4Addr::BROADCAST, 68),
    };
    let mut msg = Message::new_with_id(
        req.msg.xid(),
        req.ciaddr(),
        Ipv4Addr::UNSPECIFIED,
        cfg.server,
        req.giaddr(),
        &req.mac,
    );
    msg.set_opcode(Opcode::BootReply);
    let flags = if *to.ip() == Ipv4Addr::BROADCAST {
        req.msg.flags().set_broadcast()
    } else {
        req.msg.flags()
    };
    msg.set_flags(Flags::new(flags.into()));
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(reply_type));
    opts.insert(DhcpOption::ServerIdentifier(cfg.server));
    let class: &[u8] = if client == Client::UefiHttp {
        b"HTTPClient"
    } else {
        b"PXEClient"
    };
    opts.insert(DhcpOption::ClassIdentifier(class.to_vec()));
    if let Some(uuid) = &req.uuid {
        opts.insert(DhcpOption::ClientMachineIdentifier(uuid.clone()));
    }
    if let Some(vendor) = pxe_vendor_options(req, port, client) {
        opts.insert(DhcpOption::VendorExtensions(vendor));
    }
    if file.len() < FILE_FIELD {
        msg.set_fname_str(&file);
    } else {
        msg.opts_mut()
            .insert(DhcpOption::BootfileName(file.clone().into_bytes()));
    }
    let mut bytes = Vec::with_capacity(400);
    msg.encode(&mut Encoder::new(&mut bytes))
        .map_err(|e| Ignored::Encode(e.to_string()))?;
    Ok(Answer {
        client,
        bytes,
        to,
        file,
        note,
    })
}

/// Option 43: on port 67, BIOS PXE is told to load the file without
/// discovery; on 4011 the boot item the client asked for is echoed.
fn pxe_vendor_options(req: &Request, port: Port, client: Client) -> Option<Vec<u8>> {
    match port {
        Port::Dhcp if client == Client::BiosPxe => {
            Some(vec![DISCOVERY_CONTROL, 1, USE_BOOTFILE, 255])
        }
        Port::Pxe => {
            let asked = options(&req.pxe_options).ok()?;
            let (_, item) = asked
                .into_iter()
                .find(|(code, value)| *code == BOOT_ITEM && value.len() == 4)?;
            let mut out = vec![BOOT_ITEM, 4];
            out.extend_from_slice(item);
            out.push(255);
            Some(out)
        }
        Port::Dhcp => None,
    }
}
