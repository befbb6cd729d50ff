//! The Sparkplug B topic namespace (pure): build a node's topics, parse any topic, validate ids.
//!
//! ```text
//! spBv1.0/<group_id>/<NBIRTH|NDEATH|NDATA|NCMD>/<edge_node_id>
//! spBv1.0/<group_id>/<DBIRTH|DDEATH|DDATA|DCMD>/<edge_node_id>/<device_id>
//! spBv1.0/STATE/<host_id>
//! ```
//!
//! An id is non-empty UTF-8 without `/`, `+` or `#` (the spec's reserved characters: a level
//! separator and the two MQTT wildcards). A device id is a configured device name, which the
//! configuration already restricts to letters, digits, `_` and `-`; group, edge node and host ids
//! come from the `uplink.sparkplug` keys, which [`validate_id`] checks. Parsing is total: any
//! string gives a topic or a [`TopicError`], never a panic.

use std::fmt;

/// The namespace element of every Sparkplug B 3.0 topic.
pub const NAMESPACE: &str = "spBv1.0";
/// The second level of a host application's STATE topic.
pub const STATE: &str = "STATE";

/// The verbs of node and device topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    NBirth,
    NDeath,
    NData,
    NCmd,
    DBirth,
    DDeath,
    DData,
    DCmd,
}

impl MessageType {
    pub const ALL: [MessageType; 8] = [
        MessageType::NBirth,
        MessageType::NDeath,
        MessageType::NData,
        MessageType::NCmd,
        MessageType::DBirth,
        MessageType::DDeath,
        MessageType::DData,
        MessageType::DCmd,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::NBirth => "NBIRTH",
            MessageType::NDeath => "NDEATH",
            MessageType::NData => "NDATA",
            MessageType::NCmd => "NCMD",
            MessageType::DBirth => "DBIRTH",
            MessageType::DDeath => "DDEATH",
            MessageType::DData => "DDATA",
            MessageType::DCmd => "DCMD",
        }
    }

    pub fn parse(text: &str) -> Option<MessageType> {
        MessageType::ALL.into_iter().find(|t| t.as_str() == text)
    }

    /// Device verbs have a device id level; node verbs do not.
    pub fn is_device(self) -> bool {
        matches!(
            self,
            MessageType::DBirth | MessageType::DDeath | MessageType::DData | MessageType::DCmd
        )
    }
}

/// Which id an error is about (for messages and config errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Group,
    EdgeNode,
    Device,
    Host,
}

impl IdKind {
    fn name(self) -> &'static str {
        match self {
            IdKind::Group => "group_id",
            IdKind::EdgeNode => "edge_node_id",
            IdKind::Device => "device_id",
            IdKind::Host => "host_id",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("{} is empty", .0.name())]
    Empty(IdKind),
    #[error("{} {id:?} contains {ch:?} (a Sparkplug id may not contain /, + or #)", .kind.name())]
    Reserved { kind: IdKind, id: String, ch: char },
    #[error("topic {0:?} is not in the {NAMESPACE} namespace")]
    Namespace(String),
    #[error("topic {0:?} has an unknown message type")]
    MessageType(String),
    #[error("topic {0:?} has the wrong number of levels for its message type")]
    Shape(String),
}

/// Checks a group, edge node, device or host id.
pub fn validate_id(kind: IdKind, id: &str) -> Result<(), TopicError> {
    if id.is_empty() {
        return Err(TopicError::Empty(kind));
    }
    match id.chars().find(|c| matches!(c, '/' | '+' | '#')) {
        Some(ch) => Err(TopicError::Reserved {
            kind,
            id: id.to_owned(),
            ch,
        }),
        None => Ok(()),
    }
}

/// A parsed topic, borrowing from the string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic<'a> {
    /// A node (`device: None`) or device topic.
    Edge {
        group: &'a str,
        message: MessageType,
        edge_node: &'a str,
        device: Option<&'a str>,
    },
    /// A host application's STATE.
    State { host: &'a str },
}

impl<'a> Topic<'a> {
    /// Parses a topic name (not a filter: wildcards are refused like any reserved character).
    pub fn parse(topic: &'a str) -> Result<Topic<'a>, TopicError> {
        let mut levels = topic.split('/');
        if levels.next() != Some(NAMESPACE) {
            return Err(TopicError::Namespace(topic.to_owned()));
        }
        let rest: Vec<&str> = levels.collect();
        let shape = || TopicError::Shape(topic.to_owned());
        match rest.as_slice() {
            [state, host] if *state == STATE => {
                validate_id(IdKind::Host, host)?;
                Ok(Topic::State { host })
            }
            [group, verb, edge_node, device @ ..] => {
                let message = MessageType::parse(verb)
                    .ok_or_else(|| TopicError::MessageType(topic.to_owned()))?;
                let device = match (message.is_device(), device) {
                    (false, []) => None,
                    (true, [device]) => Some(*device),
                    _ => return Err(shape()),
                };
                validate_id(IdKind::Group, group)?;
                validate_id(IdKind::EdgeNode, edge_node)?;
                if let Some(device) = device {
                    validate_id(IdKind::Device, device)?;
                }
                Ok(Topic::Edge {
                    group,
                    message,
                    edge_node,
                    device,
                })
            }
            _ => Err(shape()),
        }
    }
}

impl fmt::Display for Topic<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::State { host } => write!(f, "{NAMESPACE}/{STATE}/{host}"),
            Topic::Edge {
                group,
                message,
                edge_node,
                device,
            } => {
                write!(f, "{NAMESPACE}/{group}/{}/{edge_node}", message.as_str())?;
                match device {
                    Some(device) => write!(f, "/{device}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// The topics of one edge node, built once from validated ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTopics {
    group: String,
    edge_node: String,
}

impl NodeTopics {
    pub fn new(group: &str, edge_node: &str) -> Result<NodeTopics, TopicError> {
        validate_id(IdKind::Group, group)?;
        validate_id(IdKind::EdgeNode, edge_node)?;
        Ok(NodeTopics {
            group: group.to_owned(),
            edge_node: edge_node.to_owned(),
        })
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    pub fn edge_node(&self) -> &str {
        &self.edge_node
    }

    /// `spBv1.0/<g>/<NBIRTH|NDEATH|NDATA|NCMD>/<e>`. A device verb here is a caller's bug; it
    /// still renders the node form rather than panic.
    pub fn node(&self, message: MessageType) -> String {
        format!(
            "{NAMESPACE}/{}/{}/{}",
            self.group,
            message.as_str(),
            self.edge_node
        )
    }

    /// `spBv1.0/<g>/<DBIRTH|DDEATH|DDATA|DCMD>/<e>/<d>`.
    pub fn device(&self, message: MessageType, device: &str) -> String {
        format!("{}/{device}", self.node(message))
    }

    /// The filter for every device's commands: `spBv1.0/<g>/DCMD/<e>/+`.
    pub fn dcmd_filter(&self) -> String {
        format!("{}/+", self.node(MessageType::DCmd))
    }

    /// `spBv1.0/STATE/<host>`.
    pub fn state(host: &str) -> String {
        format!("{NAMESPACE}/{STATE}/{host}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn node_topics_render_the_namespace() {
        let t = NodeTopics::new("plant1", "gw01").unwrap();
        assert_eq!(t.node(MessageType::NBirth), "spBv1.0/plant1/NBIRTH/gw01");
        assert_eq!(t.node(MessageType::NDeath), "spBv1.0/plant1/NDEATH/gw01");
        assert_eq!(t.node(MessageType::NCmd), "spBv1.0/plant1/NCMD/gw01");
        assert_eq!(
            t.device(MessageType::DData, "boiler"),
            "spBv1.0/plant1/DDATA/gw01/boiler"
        );
        assert_eq!(t.dcmd_filter(), "spBv1.0/plant1/DCMD/gw01/+");
        assert_eq!(NodeTopics::state("scada1"), "spBv1.0/STATE/scada1");
    }

    #[test]
    fn ids_refuse_reserved_characters() {
        for bad in ["a/b", "a+", "#", "x#y"] {
            assert!(matches!(
                validate_id(IdKind::Group, bad),
                Err(TopicError::Reserved { .. })
            ));
        }
        assert_eq!(
            validate_id(IdKind::EdgeNode, ""),
            Err(TopicError::Empty(IdKind::EdgeNode))
        );
        assert!(validate_id(IdKind::Host, "SCADA Host ü-1").is_ok());
        assert!(NodeTopics::new("plant 1", "gw/01").is_err());
    }

    #[test]
    fn parses_every_kind() {
        assert_eq!(
            Topic::parse("spBv1.0/plant1/DCMD/gw01/boiler"),
            Ok(Topic::Edge {
                group: "plant1",
                message: MessageType::DCmd,
                edge_node: "gw01",
                device: Some("boiler"),
            })
        );
        assert_eq!(
            Topic::parse("spBv1.0/plant1/NCMD/gw01"),
            Ok(Topic::Edge {
                group: "plant1",
                message: MessageType::NCmd,
                edge_node: "gw01",
                device: None,
            })
        );
        assert_eq!(
            Topic::parse("spBv1.0/STATE/scada1"),
            Ok(Topic::State { host: "scada1" })
        );
    }

    #[test]
    fn parse_refuses_malformed_topics() {
        for bad in [
            "",
            "spBv1.0",
            "spAv1.0/g/NCMD/e",
            "spBv1.0/g/NCMD",
            "spBv1.0/g/NCMD/e/d",
            "spBv1.0/g/DCMD/e",
            "spBv1.0/g/DCMD/e/d/x",
            "spBv1.0/g/SET/e",
            "spBv1.0/g/DCMD/e/+",
            "spBv1.0/g//e",
            "spBv1.0/STATE/",
            "spBv1.0/STATE/a/b",
        ] {
            assert!(Topic::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    fn id() -> impl Strategy<Value = String> {
        "[A-Za-z0-9 _.:ü-]{1,12}"
    }

    proptest! {
        #[test]
        fn build_then_parse_round_trips(group in id(), node in id(), device in id(), verb in 0usize..8) {
            let message = MessageType::ALL[verb];
            let t = NodeTopics::new(&group, &node).unwrap();
            let text = if message.is_device() { t.device(message, &device) } else { t.node(message) };
            let parsed = Topic::parse(&text).unwrap();
            prop_assert_eq!(parsed.to_string(), text.clone());
            let expected_device = message.is_device().then_some(device.as_str());
            prop_assert_eq!(parsed, Topic::Edge { group: &group, message, edge_node: &node, device: expected_device });
        }

        #[test]
        fn the_configuration_accepts_exactly_the_valid_ids(text in "[a/+# ü]{0,4}") {
            prop_assert_eq!(
                crate::config::is_sparkplug_id(&text),
                validate_id(IdKind::Group, &text).is_ok()
            );
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,40}") {
            let _ = Topic::parse(&text);
        }
    }
}
