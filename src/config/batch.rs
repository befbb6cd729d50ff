//! `uplink.batch` and `uplink.max_packet`: whether queued samples of one device travel
//! together in one message.
//!
//! ```yaml
//! uplink:
//!   batch: per_device   # none (default) | per_device | per_device_compact
//!   max_packet: 65536   # largest batched PUBLISH, bytes; only with batching
//! ```
//!
//! `max_packet` written beside `batch: none` is refused (it would be silently unused). With
//! `per_device` or `per_device_compact`, a device whose batch topic `P/<device>` would be one of the gateway's own
//! topics (`status`, `health`, `config`) is refused, and so are `drain: live_first` (the lanes
//! split the window by rows, a batch is one slot for many rows) and `profile: sparkplug` (whose
//! DDATA already carries a device's metrics together).

use super::decode::Keys;
use super::error::Issue;
use super::path::KeyPath;
use super::rules::{choice, number, Choice};

/// `max_packet` when none is written: large enough for hundreds of samples per message, small
/// enough for every broker profile and for one TCP window on a slow cellular link.
pub const DEFAULT_MAX_PACKET: u32 = 64 * 1024;
/// Below this a batch holds barely a few samples.
pub const MIN_MAX_PACKET: u32 = 1024;
/// MQTT's own limit on a packet's remaining length (256 MiB).
pub const MAX_MAX_PACKET: u32 = 268_435_455;
/// Device names whose `P/<device>` is a topic of the gateway itself.
pub const RESERVED_DEVICE_NAMES: &[&str] = &["status", "health", "config"];

/// How queued samples go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Batching {
    /// One sample per message on `P/<device>/<point>` (the default and the v1 contract): any
    /// MQTT client reads a point by its topic, at ~240 bytes on the wire per sample over TLS.
    #[default]
    None,
    /// A device's queued QoS 1 samples go as one message on `P/<device>` holding up to
    /// `max_packet` bytes: several times fewer bytes and publishes per sample, at the price of a
    /// consumer that unpacks `samples` and reads the point from each.
    PerDevice { max_packet: u32 },
    /// Like `PerDevice`, on the same topic, in the compact shape
    /// ([`crate::uplink::compact`]): point names once per message, `ts` and `seq` only where
    /// they differ from the sample before: about four times fewer bytes per sample than `None`,
    /// at the price of a consumer that applies the decoding rule (a few lines).
    PerDeviceCompact { max_packet: u32 },
}

impl Batching {
    /// `max_packet` when batching.
    pub fn max_packet(self) -> Option<u32> {
        match self {
            Batching::None => None,
            Batching::PerDevice { max_packet } | Batching::PerDeviceCompact { max_packet } => {
                Some(max_packet)
            }
        }
    }

    /// The word of `uplink.batch`.
    pub fn word(self) -> &'static str {
        match self {
            Batching::None => "none",
            Batching::PerDevice { .. } => "per_device",
            Batching::PerDeviceCompact { .. } => "per_device_compact",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BatchWord {
    None,
    PerDevice,
    PerDeviceCompact,
}

impl Choice for BatchWord {
    const WHAT: &'static str = "batch mode";
    const WORDS: &'static [(&'static str, Self)] = &[
        ("none", BatchWord::None),
        ("per_device", BatchWord::PerDevice),
        ("per_device_compact", BatchWord::PerDeviceCompact),
    ];
}

/// `uplink.batch` and `uplink.max_packet`, checked together.
pub(crate) fn validate_batch(
    keys: &Keys,
    batch: &Option<String>,
    max_packet: Option<i64>,
    issues: &mut Vec<Issue>,
) -> Option<Batching> {
    match choice(keys, "batch", batch, BatchWord::None, issues)? {
        BatchWord::None => {
            if max_packet.is_some() {
                issues.push(Issue::value(
                    keys.path_of("max_packet"),
                    "only applies with batch: per_device or per_device_compact (batch: none \
                     sends one sample per message)",
                ));
                return None;
            }
            Some(Batching::None)
        }
        word @ (BatchWord::PerDevice | BatchWord::PerDeviceCompact) => {
            let range = i64::from(MIN_MAX_PACKET)..=i64::from(MAX_MAX_PACKET);
            number(
                keys,
                "max_packet",
                max_packet,
                DEFAULT_MAX_PACKET,
                range,
                issues,
            )
            .map(|max_packet| match word {
                BatchWord::PerDeviceCompact => Batching::PerDeviceCompact { max_packet },
                _ => Batching::PerDevice { max_packet },
            })
        }
    }
}

/// What batching (`per_device`, `per_device_compact`) cannot be combined with: a device named
/// like a gateway topic, `drain: live_first`, the Sparkplug profile.
pub(crate) fn refuse_batch_conflicts<'a>(
    batching: Batching,
    live_first: bool,
    sparkplug: bool,
    device_names: impl Iterator<Item = &'a str>,
    issues: &mut Vec<Issue>,
) {
    if batching == Batching::None {
        return;
    }
    let batch_key = KeyPath::root().key("uplink").key("batch");
    let word = batching.word();
    if live_first {
        issues.push(Issue::value(
            batch_key.clone(),
            format!(
                "{word} cannot be combined with uplink.drain: live_first yet (the lanes share \
             the window by rows, a batch takes one slot for many): use drain: in_order"
            ),
        ));
    }
    if sparkplug {
        issues.push(Issue::value(
            batch_key,
            format!(
                "{word} is a JSON profile setting; Sparkplug DDATA already carries a device's \
                 metrics together"
            ),
        ));
    }
    for (index, name) in device_names.enumerate() {
        if RESERVED_DEVICE_NAMES.contains(&name) {
            issues.push(Issue::value(
                KeyPath::root().key("devices").index(index).key("name"),
                format!(
                    "with uplink.batch: {word} a device's samples go on P/<device>, and \
                     P/{name} is the gateway's own topic: rename the device"
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;
    use crate::config::testing::{errors, with_uplink as with, VALID};

    #[test]
    fn none_by_default_and_per_device_with_64_kib() {
        let batch = |text: &str| load_str(text, "c.yaml").unwrap().uplink.batch;
        assert_eq!(batch(VALID), Batching::None);
        assert_eq!(
            batch(&with("  batch: per_device\n")),
            Batching::PerDevice { max_packet: 65536 }
        );
        assert_eq!(
            batch(&with("  batch: per_device\n  max_packet: 4096\n")),
            Batching::PerDevice { max_packet: 4096 }
        );
        assert_eq!(
            batch(&with("  batch: per_device_compact\n")),
            Batching::PerDeviceCompact { max_packet: 65536 }
        );
    }

    #[test]
    fn a_bad_word_a_size_out_of_range_and_a_size_without_batching_are_refused_in_place() {
        assert_eq!(
            errors(&with("  batch: per_point\n")),
            ["6:10: uplink.batch: unknown batch mode \"per_point\": expected none, per_device or per_device_compact"]
        );
        assert_eq!(
            errors(&with("  batch: per_device\n  max_packet: 10\n")),
            ["7:15: uplink.max_packet: must be between 1024 and 268435455, got 10"]
        );
        assert_eq!(errors(&with("  max_packet: 4096\n")).len(), 1);
    }

    #[test]
    fn live_first_sparkplug_and_a_device_named_like_a_gateway_topic_are_refused() {
        let live_first = errors(&with("  batch: per_device\n  drain: live_first\n"));
        assert_eq!(live_first.len(), 1, "{live_first:?}");
        assert!(live_first[0].contains("uplink.batch"), "{live_first:?}");
        let mut issues = Vec::new();
        let names = ["pump", "status", "config", "health"];
        let per_device = Batching::PerDevice { max_packet: 4096 };
        refuse_batch_conflicts(per_device, false, true, names.into_iter(), &mut issues);
        assert_eq!(issues.len(), 4, "sparkplug + three names: {issues:?}");
        let compact = Batching::PerDeviceCompact { max_packet: 4096 };
        let mut issues = Vec::new();
        refuse_batch_conflicts(compact, true, true, names.into_iter(), &mut issues);
        assert_eq!(issues.len(), 5, "{issues:?}");
        assert!(
            issues[0].message.contains("per_device_compact"),
            "{issues:?}"
        );
        let compact_live_first =
            errors(&with("  batch: per_device_compact\n  drain: live_first\n"));
        assert_eq!(compact_live_first.len(), 1, "{compact_live_first:?}");
        let mut none = Vec::new();
        refuse_batch_conflicts(Batching::None, true, true, names.into_iter(), &mut none);
        assert!(none.is_empty());
    }
}
