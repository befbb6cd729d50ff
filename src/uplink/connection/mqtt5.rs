//! The MQTT 5 side of a connection: rumqttc's v5 codec (`rumqttc::v5::mqttbytes::v5`) behind
//! the same packets the rest of the uplink speaks (the v4 ones). Outgoing packets are
//! translated with what MQTT 5 adds to them (message expiry, topic aliases); incoming ones are
//! translated back, and what MQTT 3.1.1 cannot express comes as its own [`Received`] variant:
//! a PUBACK or PUBREC that refuses a message ([`Refusal`]), and a server's DISCONNECT
//! ([`UplinkError::ServerDisconnect`]).
//!
//! rumqttc's codec refuses a reason code it does not know as a read error (the connection is
//! renewed); every code MQTT 5 defines for these packets is known to it.

use bytes::Bytes;
use rumqttc::mqttbytes::v4;
use rumqttc::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, Connect, ConnectProperties, ConnectReturnCode, Disconnect, DisconnectReasonCode,
    Filter, LastWill, LastWillProperties, Login, Packet, PingReq, PubAck, PubAckReason, PubComp,
    PubRec, PubRecReason, PubRel, Publish, PublishProperties, Subscribe, SubscribeReasonCode,
};
use rumqttc::v5::mqttbytes::QoS as QoS5;

use super::{packet_name, ConnectOptions, Received, Refusal, Request};
use crate::uplink::alias::{Alias, Aliases};
use crate::uplink::reason::meaning;
use crate::uplink::UplinkError;

/// The CONNECT of `options` (whose `mqtt5` is set) with `credentials`.
pub(super) fn connect(
    options: ConnectOptions<'_>,
    session_expiry: u32,
    will_delay: u32,
    credentials: Option<(String, String)>,
) -> Packet {
    let mut properties = ConnectProperties::new();
    properties.session_expiry_interval = (session_expiry > 0).then_some(session_expiry);
    let connect = Connect {
        keep_alive: u16::try_from(options.keep_alive.as_secs()).unwrap_or(u16::MAX),
        client_id: options.client_id.to_owned(),
        clean_start: options.clean_session,
        properties: Some(properties),
    };
    let will = LastWill {
        topic: Bytes::copy_from_slice(options.will_topic.as_bytes()),
        message: options.will_payload,
        qos: QoS5::AtLeastOnce,
        retain: options.will_retain,
        properties: (will_delay > 0).then_some(LastWillProperties {
            delay_interval: Some(will_delay),
            payload_format_indicator: None,
            message_expiry_interval: None,
            content_type: None,
            response_topic: None,
            correlation_data: None,
            user_properties: Vec::new(),
        }),
    };
    let login = credentials.map(|(user, password)| Login::new(user, password));
    Packet::Connect(connect, Some(will), login)
}

/// The CONNACK's verdict: accepted, or refused with its reason code and meaning.
pub(super) fn accepted(ack: &ConnAck) -> Result<(), UplinkError> {
    if ack.code == ConnectReturnCode::Success {
        return Ok(());
    }
    let code = connack_code(ack.code);
    let reason = ack
        .properties
        .as_ref()
        .and_then(|p| p.reason_string.clone())
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    Err(UplinkError::Refused(format!(
        "{code:#04x} {}{reason}",
        meaning(code)
    )))
}

/// `packet` in MQTT 5 form; `expiry` is the Message Expiry Interval of a PUBLISH,
/// `correlation` its Correlation Data (an answer to a request).
pub(super) fn outgoing(
    packet: &v4::Packet,
    expiry: Option<u32>,
    correlation: Option<Bytes>,
    aliases: &mut Aliases,
) -> Result<Packet, UplinkError> {
    Ok(match packet {
        v4::Packet::Publish(p) => {
            let alias = aliases.alias(&p.topic);
            let topic = match alias {
                Alias::Known(_) => Bytes::new(),
                Alias::New(_) | Alias::None => Bytes::copy_from_slice(p.topic.as_bytes()),
            };
            let topic_alias = match alias {
                Alias::Known(a) | Alias::New(a) => Some(a),
                Alias::None => None,
            };
            let properties = (expiry.is_some() || topic_alias.is_some() || correlation.is_some())
                .then(|| PublishProperties {
                    message_expiry_interval: expiry,
                    topic_alias,
                    correlation_data: correlation,
                    ..PublishProperties::default()
                });
            Packet::Publish(Publish {
                dup: p.dup,
                qos: to_v5(p.qos),
                retain: p.retain,
                topic,
                pkid: p.pkid,
                payload: p.payload.clone(),
                properties,
            })
        }
        v4::Packet::PubAck(a) => Packet::PubAck(PubAck::new(a.pkid, None)),
        v4::Packet::PubRec(r) => Packet::PubRec(PubRec::new(r.pkid, None)),
        v4::Packet::PubRel(r) => Packet::PubRel(PubRel::new(r.pkid, None)),
        v4::Packet::PubComp(c) => Packet::PubComp(PubComp::new(c.pkid, None)),
        v4::Packet::Subscribe(s) => Packet::Subscribe(Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .iter()
                .map(|f| Filter::new(f.path.clone(), to_v5(f.qos)))
                .collect(),
            properties: None,
        }),
        v4::Packet::PingReq => Packet::PingReq(PingReq),
        v4::Packet::Disconnect => {
            Packet::Disconnect(Disconnect::new(DisconnectReasonCode::NormalDisconnection))
        }
        other => return Err(UplinkError::UnexpectedPacket(packet_name(other))),
    })
}

/// An incoming MQTT 5 packet as the uplink takes it.
pub(super) fn incoming(packet: Packet) -> Result<Received, UplinkError> {
    let refusal = |pkid, packet, code: u8, properties: Option<String>| {
        Ok(Received::Refused(Refusal {
            pkid,
            packet,
            code,
            reason: properties,
        }))
    };
    let packet = match packet {
        Packet::Publish(p) => {
            let topic = String::from_utf8(p.topic.to_vec())
                .map_err(|_| UplinkError::Protocol5(rumqttc::v5::mqttbytes::Error::TopicNotUtf8))?;
            if topic.is_empty() {
                // We allow no aliases (Topic Alias Maximum 0): an empty topic is a violation.
                return Err(UplinkError::UnexpectedPacket("PUBLISH with a topic alias"));
            }
            let request = p.properties.map(|props| Request {
                response_topic: props.response_topic,
                correlation: props.correlation_data,
                expiry: props.message_expiry_interval,
            });
            let publish = v4::Publish {
                dup: p.dup,
                qos: from_v5(p.qos),
                retain: p.retain,
                topic,
                pkid: p.pkid,
                payload: p.payload,
            };
            return Ok(match request {
                Some(request) if request != Request::default() => {
                    Received::Request(publish, request)
                }
                _ => Received::Packet(v4::Packet::Publish(publish)),
            });
        }
        Packet::PubAck(a) => match puback_code(a.reason) {
            0x00 | 0x10 => v4::Packet::PubAck(v4::PubAck::new(a.pkid)),
            code => {
                let reason = a.properties.and_then(|p| p.reason_string);
                return refusal(a.pkid, "PUBACK", code, reason);
            }
        },
        Packet::PubRec(r) => match pubrec_code(r.reason) {
            0x00 | 0x10 => v4::Packet::PubRec(v4::PubRec::new(r.pkid)),
            code => {
                let reason = r.properties.and_then(|p| p.reason_string);
                return refusal(r.pkid, "PUBREC", code, reason);
            }
        },
        // 0x92 "packet identifier not found" also ends the flow: the broker holds nothing more.
        Packet::PubComp(c) => v4::Packet::PubComp(v4::PubComp::new(c.pkid)),
        Packet::PubRel(r) => v4::Packet::PubRel(v4::PubRel::new(r.pkid)),
        Packet::SubAck(s) => v4::Packet::SubAck(v4::SubAck {
            pkid: s.pkid,
            return_codes: s
                .return_codes
                .iter()
                .map(|code| match code {
                    SubscribeReasonCode::Success(qos) => {
                        v4::SubscribeReasonCode::Success(from_v5(*qos))
                    }
                    _ => v4::SubscribeReasonCode::Failure,
                })
                .collect(),
        }),
        Packet::PingResp(_) => v4::Packet::PingResp,
        Packet::Disconnect(d) => return Err(server_disconnect(d)),
        Packet::ConnAck(_) => return Err(UplinkError::UnexpectedPacket("CONNACK")),
        Packet::UnsubAck(_) => return Err(UplinkError::UnexpectedPacket("UNSUBACK")),
        Packet::Auth(_) => return Err(UplinkError::UnexpectedPacket("AUTH")),
        _ => return Err(UplinkError::UnexpectedPacket("a client's packet")),
    };
    Ok(Received::Packet(packet))
}

fn to_v5(qos: QoS) -> QoS5 {
    match qos {
        QoS::AtMostOnce => QoS5::AtMostOnce,
        QoS::AtLeastOnce => QoS5::AtLeastOnce,
        QoS::ExactlyOnce => QoS5::ExactlyOnce,
    }
}

fn from_v5(qos: QoS5) -> QoS {
    match qos {
        QoS5::AtMostOnce => QoS::AtMostOnce,
        QoS5::AtLeastOnce => QoS::AtLeastOnce,
        QoS5::ExactlyOnce => QoS::ExactlyOnce,
    }
}

fn server_disconnect(d: Disconnect) -> UplinkError {
    let code = d.reason_code as u8;
    let (reference, reason) = d
        .properties
        .map(|p| (p.server_reference, p.reason_string))
        .unwrap_or_default();
    UplinkError::ServerDisconnect {
        code,
        meaning: meaning(code),
        reference,
        reason,
    }
}

fn puback_code(reason: PubAckReason) -> u8 {
    match reason {
        PubAckReason::Success => 0x00,
        PubAckReason::NoMatchingSubscribers => 0x10,
        PubAckReason::UnspecifiedError => 0x80,
        PubAckReason::ImplementationSpecificError => 0x83,
        PubAckReason::NotAuthorized => 0x87,
        PubAckReason::TopicNameInvalid => 0x90,
        PubAckReason::PacketIdentifierInUse => 0x91,
        PubAckReason::QuotaExceeded => 0x97,
        PubAckReason::PayloadFormatInvalid => 0x99,
    }
}

fn pubrec_code(reason: PubRecReason) -> u8 {
    match reason {
        PubRecReason::Success => 0x00,
        PubRecReason::NoMatchingSubscribers => 0x10,
        PubRecReason::UnspecifiedError => 0x80,
        PubRecReason::ImplementationSpecificError => 0x83,
        PubRecReason::NotAuthorized => 0x87,
        PubRecReason::TopicNameInvalid => 0x90,
        PubRecReason::PacketIdentifierInUse => 0x91,
        PubRecReason::QuotaExceeded => 0x97,
        PubRecReason::PayloadFormatInvalid => 0x99,
    }
}

fn connack_code(code: ConnectReturnCode) -> u8 {
    match code {
        ConnectReturnCode::Success => 0x00,
        ConnectReturnCode::UnspecifiedError => 0x80,
        ConnectReturnCode::MalformedPacket => 0x81,
        ConnectReturnCode::ProtocolError => 0x82,
        ConnectReturnCode::ImplementationSpecificError => 0x83,
        ConnectReturnCode::RefusedProtocolVersion
        | ConnectReturnCode::UnsupportedProtocolVersion => 0x84,
        ConnectReturnCode::BadClientId | ConnectReturnCode::ClientIdentifierNotValid => 0x85,
        ConnectReturnCode::BadUserNamePassword => 0x86,
        ConnectReturnCode::NotAuthorized => 0x87,
        ConnectReturnCode::ServiceUnavailable | ConnectReturnCode::ServerUnavailable => 0x88,
        ConnectReturnCode::ServerBusy => 0x89,
        ConnectReturnCode::Banned => 0x8A,
        ConnectReturnCode::BadAuthenticationMethod => 0x8C,
        ConnectReturnCode::TopicNameInvalid => 0x90,
        ConnectReturnCode::PacketTooLarge => 0x95,
        ConnectReturnCode::QuotaExceeded => 0x97,
        ConnectReturnCode::PayloadFormatInvalid => 0x99,
        ConnectReturnCode::RetainNotSupported => 0x9A,
        ConnectReturnCode::QoSNotSupported => 0x9B,
        ConnectReturnCode::UseAnotherServer => 0x9C,
        ConnectReturnCode::ServerMoved => 0x9D,
        ConnectReturnCode::ConnectionRateExceeded => 0x9F,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn roundtrip(packet: &Packet) -> Result<Received, UplinkError> {
        let mut buf = BytesMut::new();
        packet.write(&mut buf, None).unwrap();
        incoming(Packet::read(&mut buf, None).unwrap())
    }

    #[test]
    fn a_refusing_puback_is_a_refusal_with_its_code_and_a_success_a_puback() {
        let mut refused = PubAck::new(7, None);
        refused.reason = PubAckReason::NotAuthorized;
        match roundtrip(&Packet::PubAck(refused)) {
            Ok(Received::Refused(r)) => assert_eq!((r.pkid, r.code, r.packet), (7, 0x87, "PUBACK")),
            other => panic!("{other:?}"),
        }
        let mut none = PubAck::new(8, None);
        none.reason = PubAckReason::NoMatchingSubscribers;
        assert!(matches!(
            roundtrip(&Packet::PubAck(none)),
            Ok(Received::Packet(v4::Packet::PubAck(a))) if a.pkid == 8
        ));
    }

    #[test]
    fn publishes_carry_expiry_and_aliases_topic_first_then_empty() {
        let mut aliases = Aliases::new(5);
        let publish = v4::Packet::Publish(v4::Publish::new("p/d/t", QoS::AtLeastOnce, "{}"));
        let Packet::Publish(by_name) = outgoing(&publish, None, None, &mut aliases).unwrap() else {
            panic!("not a publish")
        };
        assert_eq!(
            &by_name.topic[..],
            b"p/d/t",
            "a topic's first send goes by name"
        );
        assert!(by_name.properties.is_none());
        let Packet::Publish(first) = outgoing(&publish, Some(30), None, &mut aliases).unwrap()
        else {
            panic!("not a publish")
        };
        let props = first.properties.clone().unwrap();
        assert_eq!(
            (&first.topic[..], props.topic_alias),
            (&b"p/d/t"[..], Some(1))
        );
        assert_eq!(props.message_expiry_interval, Some(30));
        let Packet::Publish(second) = outgoing(&publish, None, None, &mut aliases).unwrap() else {
            panic!("not a publish")
        };
        assert!(second.topic.is_empty());
        assert_eq!(second.properties.unwrap().topic_alias, Some(1));
    }

    #[test]
    fn the_connect_carries_session_expiry_and_will_delay_and_none_when_zero() {
        let options = |clean| ConnectOptions {
            client_id: "gw",
            keep_alive: std::time::Duration::from_secs(600),
            clean_session: clean,
            will_topic: "p/status".into(),
            will_payload: Bytes::from_static(b"{}"),
            will_retain: true,
            mqtt5: None,
        };
        let Packet::Connect(first, Some(will), None) = connect(options(false), 3600, 30, None)
        else {
            panic!("not a connect with a will")
        };
        assert!(!first.clean_start);
        assert_eq!(first.keep_alive, 600);
        let session = first.properties.and_then(|p| p.session_expiry_interval);
        assert_eq!(session, Some(3600));
        assert_eq!(will.properties.and_then(|p| p.delay_interval), Some(30));
        assert!(will.retain);
        let Packet::Connect(clean, Some(will), _) = connect(options(true), 0, 0, None) else {
            panic!("not a connect with a will")
        };
        assert!(clean.clean_start);
        assert_eq!(
            clean.properties.and_then(|p| p.session_expiry_interval),
            None
        );
        assert_eq!(will.properties, None);
    }

    #[test]
    fn a_refused_connack_names_its_code_and_meaning() {
        let ack = |code| ConnAck {
            session_present: false,
            code,
            properties: None,
        };
        assert!(accepted(&ack(ConnectReturnCode::Success)).is_ok());
        let refused = accepted(&ack(ConnectReturnCode::NotAuthorized)).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "broker refused the connection: 0x87 not authorized"
        );
    }

    #[test]
    fn a_server_disconnect_names_its_code_and_reference() {
        let mut d = Disconnect::new(DisconnectReasonCode::UseAnotherServer);
        d.properties = Some(rumqttc::v5::mqttbytes::v5::DisconnectProperties {
            session_expiry_interval: None,
            reason_string: None,
            user_properties: Vec::new(),
            server_reference: Some("b2.example.com".into()),
        });
        match roundtrip(&Packet::Disconnect(d)) {
            Err(UplinkError::ServerDisconnect {
                code, reference, ..
            }) => assert_eq!((code, reference.as_deref()), (0x9C, Some("b2.example.com"))),
            other => panic!("{other:?}"),
        }
    }
}
