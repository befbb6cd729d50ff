//! MQTT 5 reason codes (MQTT 5.0 §2.4): the one table of each code's name and meaning. Pure.
//!
//! - The **name** (`not_authorized`) is what the queue's counters, `fieldrelay queue stats`,
//!   the export, the metrics' `reason` label and `--reason` on the command line use for a row
//!   set aside as rejected. A code outside the table is named by its hex form, `0xa5`.
//! - The **meaning** (`not authorized`) is how logs and errors read a code: a CONNACK's
//!   refusal, a server's DISCONNECT, a refused PUBLISH.
//!
//! A row is rejected with the code of the broker's PUBACK or PUBREC (§3.4.2.1, §3.5.2.1), or
//! with one of the uplink's own refusals of a row it never sends: 0x95 larger than the
//! broker's Maximum Packet Size, 0x9a retained to a broker without retain, 0x9b of a QoS the
//! broker's CONNACK says it does not support ([`ROW_CODES`]). What the uplink does about a code
//! is its own policy (`uplink::reason`); the names and meanings live here because the queue
//! names rejected rows and the uplink depends on the queue, not the other way.

/// A reason code's name and meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reason {
    pub code: u8,
    /// snake_case, for counters, labels and the command line.
    pub name: &'static str,
    /// Words, for logs.
    pub meaning: &'static str,
}

const fn r(code: u8, name: &'static str, meaning: &'static str) -> Reason {
    Reason {
        code,
        name,
        meaning,
    }
}

/// Every code MQTT 5 defines (a code that means different things in different packets by the
/// meaning the uplink meets it with), in code order.
pub const REASONS: [Reason; 38] = [
    r(0x00, "success", "success"),
    r(
        0x04,
        "disconnect_with_will_message",
        "disconnect with will message",
    ),
    r(0x10, "no_matching_subscribers", "no matching subscribers"),
    r(0x80, "unspecified_error", "unspecified error"),
    r(0x81, "malformed_packet", "malformed packet"),
    r(0x82, "protocol_error", "protocol error"),
    r(
        0x83,
        "implementation_specific_error",
        "implementation specific error",
    ),
    r(
        0x84,
        "unsupported_protocol_version",
        "unsupported protocol version",
    ),
    r(
        0x85,
        "client_identifier_not_valid",
        "client identifier not valid",
    ),
    r(
        0x86,
        "bad_user_name_or_password",
        "bad user name or password",
    ),
    r(0x87, "not_authorized", "not authorized"),
    r(0x88, "server_unavailable", "server unavailable"),
    r(0x89, "server_busy", "server busy"),
    r(0x8a, "banned", "banned"),
    r(0x8b, "server_shutting_down", "server shutting down"),
    r(
        0x8c,
        "bad_authentication_method",
        "bad authentication method",
    ),
    r(0x8d, "keep_alive_timeout", "keep alive timeout"),
    r(
        0x8e,
        "session_taken_over",
        "session taken over (another client connected with this client id)",
    ),
    r(0x8f, "topic_filter_invalid", "topic filter invalid"),
    r(0x90, "topic_name_invalid", "topic name invalid"),
    r(0x91, "packet_identifier_in_use", "packet identifier in use"),
    r(
        0x92,
        "packet_identifier_not_found",
        "packet identifier not found",
    ),
    r(0x93, "receive_maximum_exceeded", "receive maximum exceeded"),
    r(0x94, "topic_alias_invalid", "topic alias invalid"),
    r(0x95, "packet_too_large", "packet too large"),
    r(0x96, "message_rate_too_high", "message rate too high"),
    r(0x97, "quota_exceeded", "quota exceeded"),
    r(0x98, "administrative_action", "administrative action"),
    r(0x99, "payload_format_invalid", "payload format invalid"),
    r(0x9a, "retain_not_supported", "retain not supported"),
    r(0x9b, "qos_not_supported", "QoS not supported"),
    r(0x9c, "use_another_server", "use another server"),
    r(0x9d, "server_moved", "server moved"),
    r(
        0x9e,
        "shared_subscriptions_not_supported",
        "shared subscriptions not supported",
    ),
    r(0x9f, "connection_rate_exceeded", "connection rate exceeded"),
    r(0xa0, "maximum_connect_time", "maximum connect time"),
    r(
        0xa1,
        "subscription_identifiers_not_supported",
        "subscription identifiers not supported",
    ),
    r(
        0xa2,
        "wildcard_subscriptions_not_supported",
        "wildcard subscriptions not supported",
    ),
];

/// The codes a row can be rejected with (a PUBACK's or PUBREC's failure, or the uplink's own
/// refusal), in code order: the metrics count each from 0, `--reason` lists their names.
pub const ROW_CODES: [u8; 10] = [0x80, 0x83, 0x87, 0x90, 0x91, 0x95, 0x97, 0x99, 0x9a, 0x9b];

/// The table's entry for `code`.
pub fn find(code: u8) -> Option<&'static Reason> {
    REASONS.iter().find(|r| r.code == code)
}

/// `not_authorized` for 0x87; a code outside the table is its hex form, `0xa5`.
pub fn name(code: u8) -> String {
    match find(code) {
        Some(reason) => reason.name.to_owned(),
        None => hex(code),
    }
}

/// `not authorized` for 0x87, for logs.
pub fn meaning(code: u8) -> &'static str {
    find(code).map_or("unknown reason code", |reason| reason.meaning)
}

/// `0x87`.
pub fn hex(code: u8) -> String {
    format!("0x{code:02x}")
}

/// `not_authorized (0x87)`: how a person reads it.
pub fn label(code: u8) -> String {
    match find(code) {
        Some(reason) => format!("{} ({})", reason.name, hex(code)),
        None => hex(code),
    }
}

/// The code of a name as [`name`] gives it (`not_authorized`, `0x87`, `0X87` or `135`); `None`
/// for anything else. For the command line (`--reason`).
pub fn parse(text: &str) -> Option<u8> {
    let text = text.trim();
    if let Some(reason) = REASONS.iter().find(|r| r.name.eq_ignore_ascii_case(text)) {
        return Some(reason.code);
    }
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u8::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_their_spec_names_and_meanings_and_others_their_hex() {
        assert_eq!(name(0x87), "not_authorized");
        assert_eq!(name(0x95), "packet_too_large");
        assert_eq!(name(0x99), "payload_format_invalid");
        assert_eq!(name(0x9b), "qos_not_supported");
        assert_eq!(name(0x9c), "use_another_server");
        assert_eq!(name(0xa5), "0xa5");
        assert_eq!(label(0x90), "topic_name_invalid (0x90)");
        assert_eq!(label(0x03), "0x03");
        assert_eq!(meaning(0x87), "not authorized");
        assert_eq!(meaning(0xa5), "unknown reason code");
    }

    #[test]
    fn every_name_and_hex_form_parses_back_to_its_code() {
        for code in 0..=u8::MAX {
            assert_eq!(parse(&name(code)), Some(code), "{}", name(code));
            assert_eq!(parse(&hex(code)), Some(code));
            assert_eq!(parse(&code.to_string()), Some(code));
        }
        assert_eq!(parse("NOT_AUTHORIZED"), Some(0x87));
        assert_eq!(parse("0X87"), Some(0x87));
        assert_eq!(parse("authorized"), None);
        assert_eq!(parse("0x187"), None);
        assert_eq!(parse("256"), None);
    }

    #[test]
    fn the_table_is_in_code_order_names_are_unique_and_every_row_code_is_named() {
        assert!(
            REASONS.windows(2).all(|w| w[0].code < w[1].code),
            "in code order"
        );
        let mut names: Vec<&str> = REASONS.iter().map(|r| r.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), REASONS.len());
        assert!(ROW_CODES.windows(2).all(|w| w[0] < w[1]));
        assert!(ROW_CODES.iter().all(|code| find(*code).is_some()));
    }
}
