//! Reading a DHCP packet that arrived on a proxyDHCP port, written by
//! anyone on the segment. The BOOTP header and the option list's framing
//! are checked here first (dhcproto takes an over-long `hlen` to a panic
//! and stops at a broken option without a word); then dhcproto decodes the
//! message, and every option the proxy reads must have decoded. What fails
//! is a [`Malformed`] with a reason the server counts; nothing here panics.

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder};

/// The largest datagram read (an Ethernet frame's payload is far less).
pub const MAX_PACKET: usize = 4096;
/// The fixed BOOTP header, before the magic cookie.
const HEADER: usize = 236;
const MAGIC: [u8; 4] = [99, 130, 83, 99];
const PAD: u8 = 0;
const END: u8 = 255;
/// The options the proxy reads, each of which must have decoded.
const READ: [u8; 6] = [53, 60, 77, 93, 97, 43];

/// Why a packet was dropped; `reason()` is its metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("truncated: {0} bytes, a DHCP message has at least 240")]
    Truncated(usize),
    #[error("larger than {MAX_PACKET} bytes")]
    Oversized,
    #[error("op {0} is not a BOOTREQUEST")]
    NotRequest(u8),
    #[error("no DHCP magic cookie")]
    NoMagic,
    #[error("hardware type {0} length {1}: only Ethernet (1, 6) boots here")]
    Hardware(u8, u8),
    #[error("option {0} runs past the end of the packet")]
    Overrun(u8),
    #[error("option {0} does not decode")]
    BadOption(u8),
    #[error("no message type (option 53)")]
    NoMessageType,
    #[error("the decoder failed: {0}")]
    Decode(String),
}

impl Malformed {
    pub fn reason(&self) -> &'static str {
        match self {
            Malformed::Truncated(_) => "truncated",
            Malformed::Oversized => "oversized",
            Malformed::NotRequest(_) => "not_request",
            Malformed::NoMagic => "no_magic",
            Malformed::Hardware(..) => "hardware",
            Malformed::Overrun(_) => "option_overrun",
            Malformed::BadOption(_) => "bad_option",
            Malformed::NoMessageType => "no_message_type",
            Malformed::Decode(_) => "decode",
        }
    }
}

/// A request the proxy may answer: the decoded message and what it reads off it.
#[derive(Debug, Clone)]
pub struct Request {
    pub msg: Message,
    pub kind: MessageType,
    pub mac: [u8; 6],
    /// Option 60 (vendor class), e.g. `PXEClient:Arch:00007:UNDI:003000`.
    pub vendor_class: Vec<u8>,
    /// Option 77 (user class), raw.
    pub user_class: Vec<u8>,
    /// Option 93 (client system architecture).
    pub arch: Option<u16>,
    /// Option 97 (client machine identifier), echoed in replies.
    pub uuid: Option<Vec<u8>>,
    /// Option 43 (PXE vendor options), raw.
    pub pxe_options: Vec<u8>,
}

impl Request {
    pub fn mac_string(&self) -> String {
        self.mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    pub fn ciaddr(&self) -> Ipv4Addr {
        self.msg.ciaddr()
    }

    pub fn giaddr(&self) -> Ipv4Addr {
        self.msg.giaddr()
    }
}

/// Read one datagram.
pub fn parse(bytes: &[u8]) -> Result<Request, Malformed> {
    if bytes.len() > MAX_PACKET {
        return Err(Malformed::Oversized);
    }
    if bytes.len() < HEADER + MAGIC.len() {
        return Err(Malformed::Truncated(bytes.len()));
    }
    if bytes[0] != 1 {
        return Err(Malformed::NotRequest(bytes[0]));
    }
    if (bytes[1], bytes[2]) != (1, 6) {
        return Err(Malformed::Hardware(bytes[1], bytes[2]));
    }
    if bytes[HEADER..HEADER + 4] != MAGIC {
        return Err(Malformed::NoMagic);
    }
    let framed = options(&bytes[HEADER + 4..]).map_err(Malformed::Overrun)?;
    // dhcproto is a third party parsing hostile bytes: a panic in it drops
    // this packet, not the server.
    let decoded = std::panic::catch_unwind(|| Message::decode(&mut Decoder::new(bytes)))
        .map_err(|_| Malformed::Decode("panicked".into()))?
        .map_err(|e| Malformed::Decode(e.to_string()))?;
    for (code, _) in framed.iter().filter(|(c, _)| READ.contains(c)) {
        if decoded.opts().get(OptionCode::from(*code)).is_none() {
            return Err(Malformed::BadOption(*code));
        }
    }
    let bytes_of = |code: OptionCode| match decoded.opts().get(code) {
        Some(
            DhcpOption::ClassIdentifier(v)
            | DhcpOption::UserClass(v)
            | DhcpOption::VendorExtensions(v),
        ) => v.clone(),
        _ => Vec::new(),
    };
    let kind = match decoded.opts().get(OptionCode::MessageType) {
        Some(DhcpOption::MessageType(t)) => *t,
        _ => return Err(Malformed::NoMessageType),
    };
    let arch = match decoded.opts().get(OptionCode::ClientSystemArchitecture) {
        Some(DhcpOption::ClientSystemArchitecture(a)) => Some(u16::from(*a)),
        _ => None,
    };
    let uuid = match decoded.opts().get(OptionCode::ClientMachineIdentifier) {
        Some(DhcpOption::ClientMachineIdentifier(v)) => Some(v.clone()),
        _ => None,
    };
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&bytes[28..34]);
    Ok(Request {
        vendor_class: bytes_of(OptionCode::ClassIdentifier),
        user_class: bytes_of(OptionCode::UserClass),
        pxe_options: bytes_of(OptionCode::VendorExtensions),
        kind,
        arch,
        uuid,
        mac,
        msg: decoded,
    })
}

/// The `(code, value)` pairs of an option list (RFC 2132 §2: pad and end
/// have no length; the list ends at `end` or with the bytes), or the code
/// of the option whose length runs past the end. Option 43's PXE
/// sub-options are framed the same way.
pub fn options(mut bytes: &[u8]) -> Result<Vec<(u8, &[u8])>, u8> {
    let mut out = Vec::new();
    while let Some((&code, rest)) = bytes.split_first() {
        match code {
            PAD => bytes = rest,
            END => break,
            _ => {
                let (&len, rest) = rest.split_first().ok_or(code)?;
                if rest.len() < len as usize {
                    return Err(code);
                }
                let (value, rest) = rest.split_at(len as usize);
                out.push((code, value));
                bytes = rest;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A DHCPDISCOVER as PXE firmware sends it, with the given options after 53.
    pub fn discover(extra: &[(u8, &[u8])]) -> Vec<u8> {
        let mut p = vec![0u8; HEADER];
        p[..4].copy_from_slice(&[1, 1, 6, 0]);
        p[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        p[10] = 0x80;
        p[28..34].copy_from_slice(&[0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        p.extend_from_slice(&MAGIC);
        p.extend_from_slice(&[53, 1, 1]);
        for (code, value) in extra {
            p.push(*code);
            p.push(value.len() as u8);
            p.extend_from_slice(value);
        }
        p.push(END);
        p
    }

    #[test]
    fn reads_a_pxe_discover() {
        let uuid = [0u8; 17];
        let r = parse(&discover(&[
            (60, b"PXEClient:Arch:00007:UNDI:003000"),
            (93, &[0, 7]),
            (97, &uuid),
        ]))
        .unwrap();
        assert_eq!(r.kind, MessageType::Discover);
        assert_eq!(r.mac_string(), "52:54:00:12:34:56");
        assert_eq!(r.vendor_class, b"PXEClient:Arch:00007:UNDI:003000");
        assert_eq!(r.arch, Some(7));
        assert_eq!(r.uuid.as_deref(), Some(&uuid[..]));
        assert!(r.user_class.is_empty() && r.pxe_options.is_empty());
    }

    #[test]
    fn malformed_packets_are_named() {
        let good = discover(&[(60, b"PXEClient")]);
        assert_eq!(parse(&good[..100]).unwrap_err(), Malformed::Truncated(100));
        assert_eq!(parse(&[]).unwrap_err(), Malformed::Truncated(0));
        assert_eq!(
            parse(&vec![1u8; MAX_PACKET + 1]).unwrap_err(),
            Malformed::Oversized
        );
        let mut reply = good.clone();
        reply[0] = 2;
        assert_eq!(parse(&reply).unwrap_err(), Malformed::NotRequest(2));
        let mut no_magic = good.clone();
        no_magic[HEADER] = 0;
        assert_eq!(parse(&no_magic).unwrap_err(), Malformed::NoMagic);
        let mut hlen = good.clone();
        hlen[2] = 200; // dhcproto's chaddr() would slice past its 16 bytes
        assert_eq!(parse(&hlen).unwrap_err(), Malformed::Hardware(1, 200));
        // Option 60 claims 200 bytes; 9 follow.
        let mut overrun = good.clone();
        overrun[HEADER + 4 + 3 + 1] = 200;
        assert_eq!(parse(&overrun).unwrap_err(), Malformed::Overrun(60));
        // An architecture of one byte (it is two).
        assert_eq!(
            parse(&discover(&[(93, &[7]), (60, b"PXEClient")])).unwrap_err(),
            Malformed::BadOption(93)
        );
        let mut untyped = discover(&[(60, b"PXEClient")]);
        untyped.splice(HEADER + 4..HEADER + 7, []);
        assert_eq!(parse(&untyped).unwrap_err(), Malformed::NoMessageType);
    }

    #[test]
    fn huge_and_repeated_options_decode_or_are_dropped_never_panic() {
        let big = vec![b'A'; 255];
        let many: Vec<(u8, &[u8])> = (0..14).map(|_| (77u8, &big[..])).collect();
        let r = parse(&discover(&many)).unwrap();
        // RFC 3396: repeated options are one, concatenated.
        assert_eq!(r.user_class.len(), 14 * 255);
        let too_many: Vec<(u8, &[u8])> = (0..16).map(|_| (200u8, &big[..])).collect();
        assert_eq!(
            parse(&discover(&too_many)).unwrap_err(),
            Malformed::Oversized
        );
    }

    #[test]
    fn random_and_mutated_packets_never_panic() {
        let base = discover(&[
            (60, b"PXEClient:Arch:00000:UNDI:002001"),
            (93, &[0, 0]),
            (77, b"iPXE"),
            (43, &[6, 1, 8, 255]),
        ]);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for i in 0..50_000 {
            let mut p = base.clone();
            match i % 3 {
                0 => (0..4).for_each(|_| {
                    let at = next() as usize % p.len();
                    p[at] = next() as u8;
                }),
                1 => p.truncate(next() as usize % (p.len() + 1)),
                _ => p = (0..(next() % 700) as usize).map(|_| next() as u8).collect(),
            }
            // The header checks keep dhcproto from panicking (caught, but a bug).
            assert_ne!(
                parse(&p).err(),
                Some(Malformed::Decode("panicked".into())),
                "{p:?}"
            );
        }
    }

    #[test]
    fn option_framing() {
        assert_eq!(
            options(&[0, 0, 6, 1, 8, 255, 9, 9]).unwrap(),
            vec![(6, &[8u8][..])]
        );
        assert_eq!(options(&[71, 4, 0, 0, 0]).unwrap_err(), 71);
        assert_eq!(options(&[71]).unwrap_err(), 71);
        assert_eq!(options(&[]).unwrap(), vec![]);
    }
}
