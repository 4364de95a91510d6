//! Property tests of the columns a completed record is stored in: decoding never panics and
//! accepts only what it should, and every payload comes back as it was stored.

use bytes::Bytes;
use proptest::prelude::*;

use super::{decode_headers, payload_columns, payload_from_columns};
use crate::engine::record::Payload;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Text shaped like the headers column: nested arrays of strings and numbers, often broken.
fn json_like() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        "\"[a-z\\\\\"]{0,6}\"",
        "-?[0-9]{1,4}",
        Just("null".to_owned()),
        Just("{}".to_owned()),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop::collection::vec(inner, 0..4).prop_map(|items| format!("[{}]", items.join(",")))
    })
    .prop_map(|text| {
        // Sometimes cut short, as a corrupt column would be.
        if text.len() > 3 && text.len() % 5 == 0 {
            text[..text.len() - 2].to_owned()
        } else {
            text
        }
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn decoding_arbitrary_columns_never_panics(
        status in any::<i32>(),
        headers in "\\PC{0,80}",
        body in any::<Vec<u8>>(),
    ) {
        let _ = decode_headers(&headers);
        if let Ok(Payload::Response { body: decoded, .. }) =
            payload_from_columns(status, Some(&headers), body.clone())
        {
            prop_assert!((100..=599).contains(&status));
            prop_assert_eq!(decoded, Bytes::from(body));
        }
    }

    #[test]
    fn decoding_json_shaped_headers_never_panics(headers in json_like()) {
        let _ = decode_headers(&headers);
    }

    #[test]
    fn stored_payloads_round_trip(
        status in 100u16..=599,
        headers in prop::collection::vec(("[a-z-]{1,20}", any::<Vec<u8>>()), 0..6),
        body in any::<Vec<u8>>(),
        value in any::<bool>(),
    ) {
        let payload = if value {
            Payload::Value(Bytes::from(body))
        } else {
            Payload::Response {
                status,
                headers: headers.into_iter().map(|(n, v)| (n, Bytes::from(v))).collect(),
                body: Bytes::from(body),
            }
        };
        let (status, headers, body) = payload_columns(&payload);
        let decoded = payload_from_columns(status, headers.as_deref(), body.to_vec());
        prop_assert_eq!(decoded, Ok(payload));
    }
}
