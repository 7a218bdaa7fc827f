//! Fuzz targets (proptest; bounded: a fixed number of cases each, so CI
//! time stays flat): the HTTP request head, DHCP and TFTP packets and the
//! inventory JSON get arbitrary and near-valid bytes. None may panic, and
//! none may allocate by a length the input claims (the parsers only ever
//! slice what they were given; the body reader checks Content-Length
//! against its limit before reading, see `http::body`). The init's
//! command-line parser is shell, not Rust: `tests/noroot/serve_nodes.rs` runs it.

use proptest::prelude::*;

use super::{dhcp, http, nodes, tftp};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A request head of plausible pieces: methods, targets, header names that
/// matter for framing, and values with signs, blanks and commas.
fn near_head() -> impl Strategy<Value = Vec<u8>> {
    let method = prop::sample::select(vec!["GET", "HEAD", "POST", "PUT", "G\0T", ""]);
    let target = "[ -~]{0,40}";
    let name = prop::sample::select(vec![
        "Content-Length",
        "Transfer-Encoding",
        "Connection",
        "Expect",
        "Host",
        "X-Forwarded-For",
        "Forwarded",
        "Authorization",
        "X\u{7f}",
    ]);
    let value = "[ -~\t]{0,24}";
    let headers = prop::collection::vec((name, value), 0..8);
    let end = prop::sample::select(vec!["\r\n\r\n", "\n\n", "\r\n", ""]);
    (method, target, headers, end).prop_map(|(m, t, hs, end)| {
        let mut s = format!("{m} {t} HTTP/1.1\r\n");
        for (n, v) in hs {
            s.push_str(&format!("{n}: {v}\r\n"));
        }
        s.push_str(end);
        s.into_bytes()
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn http_heads_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = http::parse_head(&bytes);
    }

    #[test]
    fn near_valid_http_heads_never_panic_and_frame_once(bytes in near_head()) {
        if let Ok(Some((head, len))) = http::parse_head(&bytes) {
            prop_assert!(len <= bytes.len());
            let lengths = head.parts.headers.get_all("content-length").iter().count();
            let chunked = head.parts.headers.contains_key("transfer-encoding");
            prop_assert!(lengths <= 1, "two Content-Length headers accepted");
            prop_assert!(!(chunked && lengths > 0), "TE and CL accepted together");
        }
    }

    #[test]
    fn dhcp_packets_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..1500)) {
        let _ = dhcp::parse_packet(&bytes);
    }

    #[test]
    fn dhcp_options_after_a_valid_header_never_panic(
        options in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut bytes = vec![0u8; 236];
        bytes[0] = 1; // BOOTREQUEST
        bytes[1] = 1; // Ethernet
        bytes[2] = 6;
        bytes.extend_from_slice(&[99, 130, 83, 99]); // the magic cookie
        bytes.extend_from_slice(&options);
        let _ = dhcp::parse_packet(&bytes);
    }

    #[test]
    fn tftp_packets_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        let _ = tftp::packet::parse(&bytes);
    }

    #[test]
    fn tftp_requests_with_any_strings_never_panic(
        op in 0u16..8,
        fields in prop::collection::vec("[\\PC]{0,12}", 0..8),
    ) {
        let mut bytes = op.to_be_bytes().to_vec();
        for f in fields {
            bytes.extend_from_slice(f.as_bytes());
            bytes.push(0);
        }
        let _ = tftp::packet::parse(&bytes);
    }

    #[test]
    fn inventory_json_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        let _ = nodes::Inventory::parse(&bytes);
    }

    #[test]
    fn near_valid_inventories_never_panic(
        vendor in "[\\PC\u{0}-\u{1f}]{0,20}",
        count in any::<i64>(),
        nics in prop::collection::vec("[a-z0-9:]{0,17}", 0..4),
    ) {
        let body = serde_json::json!({
            "system": {"vendor": vendor},
            "cpu": {"count": count},
            "nics": nics.iter().map(|m| serde_json::json!({"mac": m})).collect::<Vec<_>>(),
        });
        let _ = nodes::Inventory::parse(body.to_string().as_bytes());
    }
}
