//! The `buses` section: where devices are reached. A bus is a Modbus TCP connection, RTU frames
//! over TCP, an RTU serial line, or a serial line of an ASCII instrument.
//!
//! ```yaml
//! buses:
//!   - {name: plc1, type: tcp, host: 10.0.0.5}            # port 502
//!   - {name: rs485, type: rtu, port: /dev/ttyUSB0}       # 19200 8E1
//!   - {name: scale, type: serial_line, port: /dev/ttyS1, poll: "W\r\n"}   # 9600 8N1
//! ```
//!
//! A bus `type` has no default, so a file keeps its meaning whatever bus types come later. Keys
//! of another kind of bus (`baud_rate` on a tcp bus, `host` on a serial one) are refused, not
//! ignored: they are a wrong `type` or a copy-paste.

use std::time::Duration;

use serde::Deserialize;

use super::decode::{Decoded, DurationValue, Keys, List, PortValue};
use super::error::Issue;
use super::rules::{
    check_unique, choice, collect_all, each, identifier, is_host, number, numbered, optional,
    port_number, positive_duration, refuse_keys, require, required_choice, when_written, Choice,
    Numbered,
};
use super::units::format_duration;

/// The port Modbus TCP is registered on.
pub const DEFAULT_MODBUS_PORT: u16 = 502;
/// Typical PLCs answer within tens of milliseconds; a second tolerates a busy one or a gateway in
/// front of serial devices without stalling the poll loop for long.
pub const DEFAULT_BUS_TIMEOUT: Duration = Duration::from_secs(1);
/// The Modbus serial line spec's default rate (with even parity).
pub const DEFAULT_BAUD_RATE: u32 = 19_200;
/// What most ASCII instruments ship with (8N1).
pub const DEFAULT_LINE_BAUD_RATE: u32 = 9_600;
/// Above this a "turnaround" is a misconfigured timeout, not line silence.
pub const MAX_TURNAROUND_DELAY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq)]
pub struct BusConfig {
    pub name: String,
    pub kind: BusKind,
    /// Deadline for one request/response exchange (for `serial_line`: for one line after the
    /// poll string was written).
    pub timeout: Duration,
    /// Silence kept on the line between the end of one exchange and the next request: slow
    /// RS-485 transceivers and converters need time to turn the line around.
    pub turnaround_delay: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BusKind {
    /// Modbus TCP (MBAP framing).
    Tcp { host: String, port: u16 },
    /// Modbus RTU frames (with CRC) over a TCP socket, as serial device servers speak it.
    RtuOverTcp { host: String, port: u16 },
    /// Modbus RTU on a serial port (RS-485/RS-232).
    Rtu { serial: SerialSettings },
    /// Line-oriented ASCII instruments on a serial port; points are regex captures.
    SerialLine {
        serial: SerialSettings,
        line: LineSettings,
    },
}

impl BusKind {
    /// `tcp`, `rtu`, ... as written in the file.
    pub fn type_name(&self) -> &'static str {
        match self {
            BusKind::Tcp { .. } => "tcp",
            BusKind::RtuOverTcp { .. } => "rtu_over_tcp",
            BusKind::Rtu { .. } => "rtu",
            BusKind::SerialLine { .. } => "serial_line",
        }
    }
}

/// Port settings of a serial bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialSettings {
    /// Device path, e.g. `/dev/ttyUSB0`.
    pub port: String,
    pub baud_rate: u32,
    pub parity: Parity,
    /// 5..=8.
    pub data_bits: u8,
    pub stop_bits: StopBits,
}

impl SerialSettings {
    /// Time one character takes on the wire (start bit, data, parity, stop bits).
    pub fn char_time(&self) -> Duration {
        let bits = 1
            + u32::from(self.data_bits)
            + u32::from(self.parity != Parity::None)
            + match self.stop_bits {
                StopBits::One => 1,
                StopBits::Two => 2,
            };
        Duration::from_secs_f64(f64::from(bits) / f64::from(self.baud_rate.max(1)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parity {
    None,
    Even,
    Odd,
}

impl Choice for Parity {
    const WHAT: &'static str = "parity";
    const WORDS: &'static [(&'static str, Self)] = &[
        ("none", Parity::None),
        ("even", Parity::Even),
        ("odd", Parity::Odd),
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopBits {
    One,
    Two,
}

impl Numbered for StopBits {
    const NUMBERS: &'static [(i64, Self)] = &[(1, StopBits::One), (2, StopBits::Two)];
}

/// How a `serial_line` bus splits and asks for lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineSettings {
    /// Bytes that end a line (not part of it). With the default `"\n"` a `\r` before it is
    /// dropped too, so CR LF instruments need no setting.
    pub terminator: Vec<u8>,
    /// Written on every poll interval when set (instruments that answer on request); absent for
    /// instruments that stream on their own.
    pub poll: Option<Vec<u8>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBus {
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub host: Option<String>,
    /// A number for network buses, a device path for serial ones.
    pub port: Option<PortValue>,
    pub timeout: Option<DurationValue>,
    pub turnaround_delay: Option<DurationValue>,
    pub baud_rate: Option<i64>,
    pub parity: Option<String>,
    pub data_bits: Option<i64>,
    pub stop_bits: Option<i64>,
    pub terminator: Option<String>,
    pub poll: Option<String>,
}

/// Bus types as written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BusTag {
    Tcp,
    RtuOverTcp,
    Rtu,
    SerialLine,
}

impl Choice for BusTag {
    const WHAT: &'static str = "bus type";
    const WORDS: &'static [(&'static str, Self)] = &[
        ("tcp", BusTag::Tcp),
        ("rtu_over_tcp", BusTag::RtuOverTcp),
        ("rtu", BusTag::Rtu),
        ("serial_line", BusTag::SerialLine),
    ];
}

impl BusTag {
    /// `a tcp bus`, `an rtu bus` (said "an R-T-U").
    pub(crate) fn described(self) -> String {
        let article = if self.is_rtu() { "an" } else { "a" };
        format!("{article} {} bus", self.word())
    }

    fn is_network(self) -> bool {
        matches!(self, BusTag::Tcp | BusTag::RtuOverTcp)
    }

    fn is_serial(self) -> bool {
        matches!(self, BusTag::Rtu | BusTag::SerialLine)
    }

    /// Frames carry a unit id on a shared line: two devices may not share one, and unit 0 is
    /// broadcast (nobody answers it).
    pub(crate) fn is_rtu(self) -> bool {
        matches!(self, BusTag::Rtu | BusTag::RtuOverTcp)
    }
}

/// The bus names written, each with its type when that is valid. Every name written counts as
/// defined, even if that bus has errors of its own: its devices should not also get "unknown
/// bus". The type decides which device and point keys apply.
pub(crate) fn bus_tags(buses: Option<&List<Decoded<RawBus>>>) -> Vec<(&str, Option<BusTag>)> {
    let mut tags: Vec<(&str, Option<BusTag>)> = Vec::new();
    for bus in buses.iter().flat_map(|list| &list.items) {
        if let Some(name) = bus.value.name.as_deref() {
            if !tags.iter().any(|(known, _)| *known == name) {
                tags.push((name, bus.value.kind.as_deref().and_then(BusTag::parse)));
            }
        }
    }
    tags
}

/// The `buses` list: at least one, names unique.
pub(crate) fn validate_buses(
    list: &List<Decoded<RawBus>>,
    issues: &mut Vec<Issue>,
) -> Option<Vec<BusConfig>> {
    let buses = each(list, "at least one bus is required", issues, validate_bus);
    let names = list.items.iter().map(|bus| (&bus.value.name, &bus.keys));
    check_unique("bus", names, issues);
    collect_all(buses, list.len)
}

fn validate_bus(bus: &Decoded<RawBus>, issues: &mut Vec<Issue>) -> Option<BusConfig> {
    let (raw, keys) = (&bus.value, &bus.keys);
    let name = identifier(keys, "name", &raw.name, None, issues);
    let tag = required_choice::<BusTag>(keys, "type", &raw.kind, issues);
    if let Some(tag) = tag {
        refuse_other_kinds(keys, tag, issues);
    }
    // A serial bus has no host; for network buses, or when the type is unclear, a missing host
    // is worth reporting now rather than after the type is fixed.
    let host = if tag.is_some_and(BusTag::is_serial) {
        None
    } else {
        require(keys, "host", &raw.host, issues).and_then(|host| {
            if is_host(host) {
                return Some(host.clone());
            }
            issues.push(Issue::value(
                keys.path_of("host"),
                format!("invalid host {host:?}: expected a host name or an ip address"),
            ));
            None
        })
    };
    let (network, serial) = match tag {
        Some(tag) if tag.is_serial() => {
            let port = serial_port(keys, raw, issues);
            (None, serial_settings(keys, raw, tag, port, issues))
        }
        _ => (host.zip(network_port(keys, raw, issues)), None),
    };
    let timeout = positive_duration(keys, "timeout", raw.timeout, DEFAULT_BUS_TIMEOUT, issues);
    let turnaround_delay = turnaround_delay(keys, raw, tag, serial.as_ref(), issues);
    let line = if tag == Some(BusTag::SerialLine) {
        line_settings(keys, raw, issues)
    } else {
        None
    };
    let kind = match tag? {
        BusTag::Tcp => network.map(|(host, port)| BusKind::Tcp { host, port }),
        BusTag::RtuOverTcp => network.map(|(host, port)| BusKind::RtuOverTcp { host, port }),
        BusTag::Rtu => serial.map(|serial| BusKind::Rtu { serial }),
        BusTag::SerialLine => serial
            .zip(line)
            .map(|(serial, line)| BusKind::SerialLine { serial, line }),
    };
    Some(BusConfig {
        name: name?,
        kind: kind?,
        timeout: timeout?,
        turnaround_delay: turnaround_delay?,
    })
}

/// Refuses the keys of other kinds of bus.
fn refuse_other_kinds(keys: &Keys, tag: BusTag, issues: &mut Vec<Issue>) {
    let owner = tag.described();
    if tag.is_network() {
        let serial_keys = ["baud_rate", "parity", "data_bits", "stop_bits"];
        refuse_keys(keys, &serial_keys, &owner, issues);
    } else {
        refuse_keys(keys, &["host"], &owner, issues);
    }
    if tag != BusTag::SerialLine {
        refuse_keys(keys, &["terminator", "poll"], &owner, issues);
    }
}

/// `turnaround_delay`, at most [`MAX_TURNAROUND_DELAY`]. RTU needs at least 3.5 character times
/// of silence between frames (1.75 ms above 19200 baud, Modbus over serial line spec 2.5.1.1),
/// the default there; other buses need none.
fn turnaround_delay(
    keys: &Keys,
    raw: &RawBus,
    tag: Option<BusTag>,
    serial: Option<&SerialSettings>,
    issues: &mut Vec<Issue>,
) -> Option<Duration> {
    let default = match (serial, tag) {
        (Some(serial), Some(BusTag::Rtu)) => serial
            .char_time()
            .mul_f64(3.5)
            .max(Duration::from_micros(1750)),
        _ => Duration::ZERO,
    };
    let delay = optional(
        keys,
        "turnaround_delay",
        raw.turnaround_delay.map(|d| d.0),
        default,
    )?;
    if delay <= MAX_TURNAROUND_DELAY {
        return Some(delay);
    }
    issues.push(Issue::value(
        keys.path_of("turnaround_delay"),
        format!(
            "must be at most {}, got {}",
            format_duration(MAX_TURNAROUND_DELAY),
            format_duration(delay)
        ),
    ));
    None
}

/// `port` of a network bus: a number, 502 by default.
fn network_port(keys: &Keys, raw: &RawBus, issues: &mut Vec<Issue>) -> Option<u16> {
    match &raw.port {
        None if keys.rejected.contains("port") => None,
        None => Some(DEFAULT_MODBUS_PORT),
        Some(PortValue::Number(port)) => port_number(keys, "port", *port, issues),
        Some(PortValue::Path(path)) => {
            issues.push(Issue::value(
                keys.path_of("port"),
                format!("expected a tcp port number (1 to 65535), got the text {path:?}"),
            ));
            None
        }
    }
}

/// `port` of a serial bus: a device path, required.
pub(crate) fn serial_port(keys: &Keys, raw: &RawBus, issues: &mut Vec<Issue>) -> Option<String> {
    let message = match require(keys, "port", &raw.port, issues)? {
        PortValue::Path(path) if !path.is_empty() && !path.contains('\0') => {
            return Some(path.clone())
        }
        PortValue::Path(_) => "expected a serial device path such as /dev/ttyUSB0".to_owned(),
        PortValue::Number(n) => {
            format!("expected a serial device path such as /dev/ttyUSB0, got the number {n}")
        }
    };
    issues.push(Issue::value(keys.path_of("port"), message));
    None
}

/// Port settings of an `rtu` or `serial_line` bus. Defaults: rtu 19200 8E1 (the Modbus serial
/// line spec's default), serial_line 9600 8N1 (what ASCII instruments ship with).
pub(crate) fn serial_settings(
    keys: &Keys,
    raw: &RawBus,
    tag: BusTag,
    port: Option<String>,
    issues: &mut Vec<Issue>,
) -> Option<SerialSettings> {
    let rtu = tag == BusTag::Rtu;
    let default_baud = if rtu {
        DEFAULT_BAUD_RATE
    } else {
        DEFAULT_LINE_BAUD_RATE
    };
    let baud_rate = number(
        keys,
        "baud_rate",
        raw.baud_rate,
        default_baud,
        50..=4_000_000,
        issues,
    );
    let default_parity = if rtu { Parity::Even } else { Parity::None };
    let parity = choice(keys, "parity", &raw.parity, default_parity, issues);
    let data_bits = number(keys, "data_bits", raw.data_bits, 8u8, 5..=8, issues).filter(|bits| {
        let fits = !rtu || *bits == 8;
        if !fits {
            issues.push(Issue::value(
                keys.path_of("data_bits"),
                format!("modbus rtu frames use 8 data bits, got {bits}"),
            ));
        }
        fits
    });
    let stop_bits = numbered(keys, "stop_bits", raw.stop_bits, StopBits::One, issues);
    Some(SerialSettings {
        port: port?,
        baud_rate: baud_rate?,
        parity: parity?,
        data_bits: data_bits?,
        stop_bits: stop_bits?,
    })
}

/// `terminator` and `poll` of a serial_line bus.
fn line_settings(keys: &Keys, raw: &RawBus, issues: &mut Vec<Issue>) -> Option<LineSettings> {
    let terminator = optional(keys, "terminator", raw.terminator.clone(), "\n".to_owned())
        .and_then(|terminator| {
            if terminator.is_empty() || terminator.len() > 8 {
                issues.push(Issue::value(
                    keys.path_of("terminator"),
                    format!(
                        "must be 1 to 8 bytes (e.g. \"\\r\\n\" in double quotes), got {}",
                        terminator.len()
                    ),
                ));
                None
            } else {
                Some(terminator.into_bytes())
            }
        });
    let poll = when_written(keys, "poll", &raw.poll, |poll| {
        if poll.is_empty() {
            issues.push(Issue::value(
                keys.path_of("poll"),
                "must not be empty (leave the key out for instruments that send on their own)",
            ));
            return None;
        }
        Some(poll.clone().into_bytes())
    });
    Some(LineSettings {
        terminator: terminator?,
        poll: poll?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::device::{Coalesce, Planning};
    use crate::config::load_str;
    use crate::config::testing::fieldbus;
    use crate::config::testing::{errors, with};

    #[test]
    fn bus_rules() {
        assert_eq!(
            errors(&with(&[(
                "    host: 10.0.0.5\n",
                "    host: 10.0.0.5:502\n    port: 0\n    timeout: 0s\n"
            )])),
            [
                r#"9:11: buses[0].host: invalid host "10.0.0.5:502": expected a host name or an ip address"#,
                "10:11: buses[0].port: must be between 1 and 65535, got 0",
                "11:14: buses[0].timeout: must be greater than 0s",
            ]
        );
        assert_eq!(
            errors(&with(&[("    type: tcp\n", "    type: udp\n")])),
            [
                r#"8:11: buses[0].type: unknown bus type "udp": expected tcp, rtu_over_tcp, rtu or serial_line"#
            ]
        );
    }

    #[test]
    fn serial_buses_resolve_their_defaults() {
        let config = load_str(
            &fieldbus("    type: rtu\n    port: /dev/ttyUSB0\n", ""),
            "c.yaml",
        )
        .unwrap();
        let bus = &config.buses[0];
        assert_eq!(
            bus.kind,
            BusKind::Rtu {
                serial: SerialSettings {
                    port: "/dev/ttyUSB0".to_owned(),
                    baud_rate: 19_200,
                    parity: Parity::Even,
                    data_bits: 8,
                    stop_bits: StopBits::One,
                }
            }
        );
        // 3.5 characters of 11 bits at 19200 baud is 2.005 ms.
        assert_eq!(bus.turnaround_delay.as_micros(), 2005);
        let config = load_str(
            &fieldbus(
                "    type: rtu_over_tcp\n    host: gw.local\n    port: 4001\n    turnaround_delay: 5ms\n",
                "",
            ),
            "c.yaml",
        )
        .unwrap();
        assert_eq!(
            config.buses[0].kind,
            BusKind::RtuOverTcp {
                host: "gw.local".to_owned(),
                port: 4001
            }
        );
        assert_eq!(config.buses[0].turnaround_delay, Duration::from_millis(5));
        let device = &config.devices[0];
        assert_eq!(
            device.planning,
            Planning {
                max_gap: 8,
                max_registers_per_read: 125,
                coalesce: Coalesce::Merge
            }
        );
        assert_eq!(device.backoff_max, Duration::from_secs(60));
    }

    #[test]
    fn serial_bus_rules() {
        assert_eq!(
            errors(&fieldbus(
                "    type: rtu\n    host: x\n    port: 502\n    baud_rate: 10\n    parity: evn\n    data_bits: 7\n    stop_bits: 3\n    poll: \"?\"\n",
                ""
            )),
            [
                "9:5: buses[0].host: `host` does not apply to an rtu bus",
                "10:11: buses[0].port: expected a serial device path such as /dev/ttyUSB0, got the number 502",
                "11:16: buses[0].baud_rate: must be between 50 and 4000000, got 10",
                r#"12:13: buses[0].parity: unknown parity "evn": expected none, even or odd (did you mean "even"?)"#,
                "13:16: buses[0].data_bits: modbus rtu frames use 8 data bits, got 7",
                "14:16: buses[0].stop_bits: must be 1 or 2, got 3",
                "15:5: buses[0].poll: `poll` does not apply to an rtu bus",
            ]
        );
        assert_eq!(
            errors(&fieldbus(
                "    type: tcp\n    host: x\n    port: /dev/ttyS0\n    baud_rate: 9600\n    turnaround_delay: 2s\n",
                ""
            )),
            [
                r#"10:11: buses[0].port: expected a tcp port number (1 to 65535), got the text "/dev/ttyS0""#,
                "11:5: buses[0].baud_rate: `baud_rate` does not apply to a tcp bus",
                "12:23: buses[0].turnaround_delay: must be at most 1s, got 2s",
            ]
        );
    }
}
