//! MQTT 5 reason codes a broker (or the uplink itself) refuses a PUBLISH with, by name
//! (MQTT 5.0 §3.4.2.1 for PUBACK, §3.5.2.1 for PUBREC; 0x95, 0x9a and 0x9b are the uplink's own
//! refusals of a row larger than the broker's Maximum Packet Size, or retained, or of a QoS the
//! broker's CONNACK says it does not support). Pure: the names the queue's counters,
//! `fieldrelay queue stats`, the export and the metrics use for a rejected row.

/// The reason codes with a name, in code order.
pub const NAMED: [(u8, &str); 10] = [
    (0x80, "unspecified_error"),
    (0x83, "implementation_specific_error"),
    (0x87, "not_authorized"),
    (0x90, "topic_name_invalid"),
    (0x91, "packet_identifier_in_use"),
    (0x95, "packet_too_large"),
    (0x97, "quota_exceeded"),
    (0x99, "payload_format_invalid"),
    (0x9a, "retain_not_supported"),
    (0x9b, "qos_not_supported"),
];

/// `not_authorized` for 0x87; a code without a name is its hex form, `0x9c`.
pub fn name(code: u8) -> String {
    match NAMED.iter().find(|(c, _)| *c == code) {
        Some((_, name)) => (*name).to_owned(),
        None => hex(code),
    }
}

/// `0x87`.
pub fn hex(code: u8) -> String {
    format!("0x{code:02x}")
}

/// `not_authorized (0x87)`: how a person reads it.
pub fn label(code: u8) -> String {
    match NAMED.iter().find(|(c, _)| *c == code) {
        Some((_, name)) => format!("{name} ({})", hex(code)),
        None => hex(code),
    }
}

/// The code of a name as [`name`] gives it (`not_authorized`, `0x87`, `0X87` or `135`); `None`
/// for anything else. For the command line (`--reason`).
pub fn parse(text: &str) -> Option<u8> {
    let text = text.trim();
    if let Some((code, _)) = NAMED.iter().find(|(_, n)| n.eq_ignore_ascii_case(text)) {
        return Some(*code);
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
    fn named_codes_have_their_spec_names_and_others_their_hex() {
        assert_eq!(name(0x87), "not_authorized");
        assert_eq!(name(0x95), "packet_too_large");
        assert_eq!(name(0x99), "payload_format_invalid");
        assert_eq!(name(0x9b), "qos_not_supported");
        assert_eq!(name(0x9c), "0x9c");
        assert_eq!(name(0x00), "0x00");
        assert_eq!(label(0x90), "topic_name_invalid (0x90)");
        assert_eq!(label(0x01), "0x01");
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
    fn the_table_is_in_code_order_without_duplicates() {
        assert!(NAMED.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
