//! TFTP packets (RFC 1350) and the option extension (RFC 2347): parsing what
//! a client sends, encoding what the server sends. Anything malformed is an
//! error value, never a panic.

/// Opcodes.
pub const RRQ: u16 = 1;
pub const WRQ: u16 = 2;
pub const DATA: u16 = 3;
pub const ACK: u16 = 4;
pub const ERROR: u16 = 5;
pub const OACK: u16 = 6;

/// Error codes (RFC 1350, 2347).
pub const ERR_UNDEFINED: u16 = 0;
pub const ERR_NOT_FOUND: u16 = 1;
pub const ERR_ACCESS: u16 = 2;
pub const ERR_ILLEGAL: u16 = 4;
pub const ERR_OPTION: u16 = 8;

#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    /// A read (or write) request: file name, mode, options in order.
    Request {
        write: bool,
        file: String,
        mode: String,
        options: Vec<(String, String)>,
    },
    Data {
        block: u16,
        data: Vec<u8>,
    },
    Ack {
        block: u16,
    },
    Error {
        code: u16,
        message: String,
    },
    Oack {
        options: Vec<(String, String)>,
    },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("malformed TFTP packet: {0}")]
pub struct Malformed(pub &'static str);

fn u16_at(buf: &[u8], at: usize) -> Result<u16, Malformed> {
    match buf.get(at..at + 2) {
        Some(b) => Ok(u16::from_be_bytes([b[0], b[1]])),
        None => Err(Malformed("truncated")),
    }
}

/// NUL-terminated strings; the packet must end with a NUL.
fn strings(buf: &[u8]) -> Result<Vec<String>, Malformed> {
    if buf.last() != Some(&0) {
        return Err(Malformed("string not NUL-terminated"));
    }
    buf[..buf.len() - 1]
        .split(|b| *b == 0)
        .map(|s| String::from_utf8(s.to_vec()).map_err(|_| Malformed("string not UTF-8")))
        .collect()
}

pub fn parse(buf: &[u8]) -> Result<Packet, Malformed> {
    let op = u16_at(buf, 0)?;
    let rest = &buf[2..];
    match op {
        RRQ | WRQ | OACK => {
            let parts = strings(rest)?;
            let (head, opts) = if op == OACK {
                (&parts[..0], &parts[..])
            } else {
                if parts.len() < 2 {
                    return Err(Malformed("request without file name and mode"));
                }
                parts.split_at(2)
            };
            if opts.len() % 2 != 0 {
                return Err(Malformed("option without value"));
            }
            let options = opts
                .chunks(2)
                .map(|c| (c[0].to_ascii_lowercase(), c[1].clone()))
                .collect();
            if op == OACK {
                return Ok(Packet::Oack { options });
            }
            if head[0].is_empty() {
                return Err(Malformed("empty file name"));
            }
            Ok(Packet::Request {
                write: op == WRQ,
                file: head[0].clone(),
                mode: head[1].to_ascii_lowercase(),
                options,
            })
        }
        DATA => Ok(Packet::Data {
            block: u16_at(buf, 2)?,
            data: buf[4..].to_vec(),
        }),
        ACK => Ok(Packet::Ack {
            block: u16_at(buf, 2)?,
        }),
        ERROR => {
            let code = u16_at(buf, 2)?;
            let message = strings(&buf[4..])
                .ok()
                .and_then(|s| s.into_iter().next())
                .unwrap_or_default();
            Ok(Packet::Error { code, message })
        }
        _ => Err(Malformed("unknown opcode")),
    }
}

pub fn encode(packet: &Packet) -> Vec<u8> {
    let mut out = Vec::new();
    let put_str = |out: &mut Vec<u8>, s: &str| {
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    };
    match packet {
        Packet::Request {
            write,
            file,
            mode,
            options,
        } => {
            out.extend_from_slice(&(if *write { WRQ } else { RRQ }).to_be_bytes());
            put_str(&mut out, file);
            put_str(&mut out, mode);
            for (k, v) in options {
                put_str(&mut out, k);
                put_str(&mut out, v);
            }
        }
        Packet::Data { block, data } => {
            out.extend_from_slice(&DATA.to_be_bytes());
            out.extend_from_slice(&block.to_be_bytes());
            out.extend_from_slice(data);
        }
        Packet::Ack { block } => {
            out.extend_from_slice(&ACK.to_be_bytes());
            out.extend_from_slice(&block.to_be_bytes());
        }
        Packet::Error { code, message } => {
            out.extend_from_slice(&ERROR.to_be_bytes());
            out.extend_from_slice(&code.to_be_bytes());
            put_str(&mut out, message);
        }
        Packet::Oack { options } => {
            out.extend_from_slice(&OACK.to_be_bytes());
            for (k, v) in options {
                put_str(&mut out, k);
                put_str(&mut out, v);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let rrq = Packet::Request {
            write: false,
            file: "undionly.kpxe".into(),
            mode: "octet".into(),
            options: vec![
                ("blksize".into(), "1432".into()),
                ("tsize".into(), "0".into()),
            ],
        };
        assert_eq!(parse(&encode(&rrq)).unwrap(), rrq);
        let mixed = b"\x00\x01File\x00OCTET\x00BlkSize\x00512\x00";
        let Packet::Request { mode, options, .. } = parse(mixed).unwrap() else {
            panic!()
        };
        assert_eq!(mode, "octet");
        assert_eq!(options, vec![("blksize".to_string(), "512".to_string())]);
        assert_eq!(parse(&[0, 4, 1, 2]).unwrap(), Packet::Ack { block: 258 });
        assert_eq!(
            parse(&encode(&Packet::Error {
                code: 1,
                message: "x".into()
            }))
            .unwrap(),
            Packet::Error {
                code: 1,
                message: "x".into()
            }
        );
        for bad in [
            &b""[..],
            b"\x00",
            b"\x00\x09ab",
            b"\x00\x01file",
            b"\x00\x01file\x00",
            b"\x00\x01\x00octet\x00",
            b"\x00\x01f\x00octet\x00blksize\x00",
            b"\x00\x04\x01",
            b"\xff\xfe\xfd",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            encode(&Packet::Data {
                block: 1,
                data: vec![7]
            }),
            vec![0, 3, 0, 1, 7]
        );
    }
}
