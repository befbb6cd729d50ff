//! Fieldbus integration: real byte streams and peers we did not write.
//!
//! - RTU over a `socat` pseudo-terminal pair against **pymodbus 3.7.4** (its own encoder writes
//!   every type in every byte/word order) and against our simulator (tokio-modbus' RTU server).
//! - RTU-over-TCP and TCP against tokio-modbus' servers (our simulator), with registers written
//!   from `std`'s byte functions, not from our encoder.
//! - The same map on every peer covers every table: numerics in holding and input registers,
//!   strings in both byte orders, `bit: N` of holding and input registers, whole registers as
//!   `bool`, and ten coils and ten discrete inputs (FC 1/2 replies of two bytes).
//! - An `rtu` bus whose port vanishes (socat killed: an unplugged USB adapter) and comes back.
//! - A `serial_line` instrument on a pty pair that sends garbage between good lines.
//! - Three devices on one RTU line, one unplugged: measured spacing of the others' samples.
//!
//! Every path is a fresh temp dir and every port is picked by the OS. Waits are on events with
//! generous deadlines (this machine is shared with other builds).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fieldrelay::config::{
    BusConfig, BusKind, ByteOrder, Coalesce, DataType, DeviceConfig, Encoding, LinePattern,
    LineSettings, ModbusSource, Parity, Planning, PointConfig, PointSource, PublishMode, Qos,
    Reporting, SerialSettings, StopBits, Table, WordOrder,
};
use fieldrelay::modbus::{self, BusHandle};
use fieldrelay::sample::{Sample, Value};
use fieldrelay::simulator::{self, Framing, Registers, Simulator};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A `socat` pseudo-terminal pair; killed on drop.
struct PtyPair {
    child: Child,
    a: PathBuf,
    b: PathBuf,
}

impl PtyPair {
    fn new(dir: &Path) -> PtyPair {
        let (a, b) = (dir.join("ttyA"), dir.join("ttyB"));
        let child = Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", a.display()))
            .arg(format!("pty,raw,echo=0,link={}", b.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start socat (run scripts/test-deps.sh)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !(a.exists() && b.exists()) {
            assert!(std::time::Instant::now() < deadline, "socat made no ptys");
            std::thread::sleep(Duration::from_millis(10));
        }
        PtyPair { child, a, b }
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed on drop.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The Python with pymodbus 3.7.4 ([`common::python::find`]).
fn python() -> PathBuf {
    common::python::find(
        "import pymodbus, serial; assert pymodbus.__version__ == '3.7.4'",
        "pymodbus 3.7.4 and pyserial",
    )
}

fn serial(port: &Path) -> SerialSettings {
    SerialSettings {
        port: port.display().to_string(),
        baud_rate: 19_200,
        parity: Parity::Even,
        data_bits: 8,
        stop_bits: StopBits::One,
    }
}

fn bus(kind: BusKind, timeout: Duration) -> BusConfig {
    BusConfig {
        name: "bus".into(),
        kind,
        timeout,
        turnaround_delay: Duration::from_millis(2),
    }
}

fn point(
    name: &str,
    table: Table,
    address: u16,
    data_type: DataType,
    encoding: Encoding,
) -> PointConfig {
    PointConfig {
        name: name.into(),
        source: PointSource::Modbus(ModbusSource {
            table,
            address,
            bit: None,
            encoding,
        }),
        data_type,
        scale: 1.0,
        offset: 0.0,
        decimals: None,
        qos: Qos::AtLeastOnce,
        retain: false,
        reporting: Reporting {
            publish: PublishMode::EveryPoll,
            deadband: 0.0,
            max_silence: None,
        },
        unit: None,
        write: None,
    }
}

fn device(name: &str, unit_id: u8, poll: Duration, points: Vec<PointConfig>) -> DeviceConfig {
    DeviceConfig {
        name: name.into(),
        bus: "bus".into(),
        unit_id,
        poll_interval: poll,
        points,
        planning: Planning {
            max_gap: 8,
            max_registers_per_read: 125,
            coalesce: Coalesce::Merge,
        },
        backoff_max: Duration::from_secs(1),
        offline_after: 3,
    }
}

type Received = mpsc::UnboundedReceiver<(Instant, Sample)>;

fn start(bus: BusConfig, devices: Vec<DeviceConfig>) -> (BusHandle, Received, CancellationToken) {
    let (tx, rx) = mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let handle = modbus::spawn_bus(bus, devices, tx, cancel.clone(), &tracker);
    (handle, rx, cancel)
}

/// Receives until every point in `names` has a sample; returns the first value of each.
async fn first_values(
    rx: &mut Received,
    names: &[String],
    deadline: Duration,
) -> Vec<(String, Value)> {
    let mut seen: Vec<Option<Value>> = vec![None; names.len()];
    let wait = async {
        while seen.iter().any(Option::is_none) {
            let (_, sample) = rx.recv().await.expect("bus owner running");
            if let Some(i) = names.iter().position(|n| **n == *sample.point) {
                seen[i].get_or_insert(sample.value);
            }
        }
    };
    if tokio::time::timeout(deadline, wait).await.is_err() {
        let missing: Vec<_> = names
            .iter()
            .zip(&seen)
            .filter(|(_, v)| v.is_none())
            .map(|(n, _)| n)
            .collect();
        panic!("no sample within {deadline:?} for {missing:?}");
    }
    names
        .iter()
        .cloned()
        .zip(seen.into_iter().flatten())
        .collect()
}

const ORDERS: [(&str, ByteOrder, WordOrder); 4] = [
    ("abcd", ByteOrder::Big, WordOrder::Big),
    ("badc", ByteOrder::Little, WordOrder::Big),
    ("cdab", ByteOrder::Big, WordOrder::Little),
    ("dcba", ByteOrder::Little, WordOrder::Little),
];

/// One value of each type: (type name, type, value as the peer is told, expected value).
fn samples_of_every_type() -> Vec<(&'static str, DataType, serde_json::Value, Value)> {
    vec![
        ("u16", DataType::U16, 54_321.into(), Value::Int(54_321)),
        ("i16", DataType::I16, (-1234).into(), Value::Int(-1234)),
        (
            "u32",
            DataType::U32,
            3_000_000_001u32.into(),
            Value::Int(3_000_000_001),
        ),
        (
            "i32",
            DataType::I32,
            (-2_000_000_001).into(),
            Value::Int(-2_000_000_001),
        ),
        (
            "u64",
            DataType::U64,
            18_000_000_000_000_000_001u64.into(),
            Value::UInt(18_000_000_000_000_000_001),
        ),
        (
            "i64",
            DataType::I64,
            (-9_000_000_000_000_000_001i64).into(),
            Value::Int(-9_000_000_000_000_000_001),
        ),
        ("f32", DataType::F32, 21.5.into(), Value::Float(21.5)),
        (
            "f64",
            DataType::F64,
            (-1234.5678).into(),
            Value::Float(-1234.5678),
        ),
    ]
}

/// Canonical (big-endian) bytes of a value, from `std`, not from fieldrelay's encoder.
fn std_bytes(value: &serde_json::Value, data_type: DataType) -> Vec<u8> {
    match data_type {
        DataType::U16 => (value.as_u64().unwrap() as u16).to_be_bytes().to_vec(),
        DataType::I16 => (value.as_i64().unwrap() as i16).to_be_bytes().to_vec(),
        DataType::U32 => (value.as_u64().unwrap() as u32).to_be_bytes().to_vec(),
        DataType::I32 => (value.as_i64().unwrap() as i32).to_be_bytes().to_vec(),
        DataType::U64 => value.as_u64().unwrap().to_be_bytes().to_vec(),
        DataType::I64 => value.as_i64().unwrap().to_be_bytes().to_vec(),
        DataType::F32 => (value.as_f64().unwrap() as f32).to_be_bytes().to_vec(),
        DataType::F64 => value.as_f64().unwrap().to_be_bytes().to_vec(),
        _ => unreachable!(),
    }
}

/// Registers on the wire for canonical `bytes` in an order (the table in decode.rs' docs).
fn wire_words(bytes: &[u8], byte_order: ByteOrder, word_order: WordOrder) -> Vec<u16> {
    let mut words: Vec<u16> = bytes
        .chunks(2)
        .map(|p| match byte_order {
            ByteOrder::Big => u16::from_be_bytes([p[0], p[1]]),
            ByteOrder::Little => u16::from_le_bytes([p[0], p[1]]),
        })
        .collect();
    if word_order == WordOrder::Little {
        words.reverse();
    }
    words
}

/// What a peer holds at one address: registers or bits of a table.
enum Wire {
    Words(Table, u16, Vec<u16>),
    Bits(Table, u16, Vec<bool>),
}

/// Points, expected values, the pymodbus spec, and what the peer holds.
struct Layout {
    points: Vec<PointConfig>,
    expected: Vec<(String, Value)>,
    spec: Vec<serde_json::Value>,
    wire: Vec<Wire>,
}

fn table_name(table: Table) -> &'static str {
    match table {
        Table::Coil => "coil",
        Table::DiscreteInput => "discrete_input",
        Table::Holding => "holding",
        Table::Input => "input",
    }
}

impl Layout {
    /// A numeric point told to the peer as `told` in an order; `std` computes its registers.
    fn number(
        &mut self,
        name: String,
        source: (Table, u16),
        (type_name, data_type): (&str, DataType),
        (told, value): (&serde_json::Value, &Value),
        (byte_order, word_order): (ByteOrder, WordOrder),
    ) {
        let (table, address) = source;
        let encoding = Encoding {
            byte_order,
            word_order,
        };
        self.points
            .push(point(&name, table, address, data_type, encoding));
        self.expected.push((name, value.clone()));
        self.spec.push(serde_json::json!({
            "table": table_name(table), "address": address, "type": type_name, "value": told,
            "byte_order": if byte_order == ByteOrder::Big { "big" } else { "little" },
            "word_order": if word_order == WordOrder::Big { "big" } else { "little" },
        }));
        self.wire.push(Wire::Words(
            table,
            address,
            wire_words(&std_bytes(told, data_type), byte_order, word_order),
        ));
    }

    /// A text of `length` registers; the peer pads it with NULs.
    fn string(&mut self, name: &str, address: u16, length: u16, text: &str, order: ByteOrder) {
        let encoding = Encoding {
            byte_order: order,
            word_order: WordOrder::Big,
        };
        let data_type = DataType::String { length };
        self.points
            .push(point(name, Table::Holding, address, data_type, encoding));
        self.expected.push((name.into(), Value::Str(text.into())));
        self.spec.push(serde_json::json!({
            "table": "holding", "address": address, "type": "string", "value": text,
            "length": length,
            "byte_order": if order == ByteOrder::Big { "big" } else { "little" },
            "word_order": "big",
        }));
        let mut bytes = text.as_bytes().to_vec();
        bytes.resize(usize::from(length) * 2, 0);
        self.wire.push(Wire::Words(
            Table::Holding,
            address,
            wire_words(&bytes, order, WordOrder::Big),
        ));
    }

    /// One register holding `raw`, read as bools: `bit: N` points for each of `bits`, or the
    /// whole register (`type: bool`, register ≠ 0) for `None`.
    fn register_bools(&mut self, table: Table, address: u16, raw: u16, bits: &[Option<u8>]) {
        for bit in bits {
            let (name, value) = match bit {
                Some(bit) => (
                    format!("{}_{address}_bit{bit}", table_name(table)),
                    raw >> bit & 1 == 1,
                ),
                None => (format!("{}_{address}_bool", table_name(table)), raw != 0),
            };
            let mut p = point(&name, table, address, DataType::Bool, Encoding::default());
            if let PointSource::Modbus(source) = &mut p.source {
                source.bit = *bit;
            }
            self.points.push(p);
            self.expected.push((name, Value::Bool(value)));
        }
        self.spec.push(serde_json::json!({
            "table": table_name(table), "address": address, "type": "u16", "value": raw,
            "byte_order": "big", "word_order": "big",
        }));
        self.wire.push(Wire::Words(table, address, vec![raw]));
    }

    /// Consecutive bits of a coil or discrete input table, one bool point each.
    fn bits(&mut self, table: Table, address: u16, bits: &[bool]) {
        for (i, bit) in (address..).zip(bits) {
            let name = format!("{}_{i}", table_name(table));
            self.points
                .push(point(&name, table, i, DataType::Bool, Encoding::default()));
            self.expected.push((name, Value::Bool(*bit)));
        }
        self.spec.push(serde_json::json!({
            "table": table_name(table), "address": address, "type": "bits", "value": bits,
        }));
        self.wire.push(Wire::Bits(table, address, bits.to_vec()));
    }
}

/// Every table and every type: each numeric type in every order in holding registers (4
/// addresses apart), each numeric type once in input registers (orders rotating), strings in
/// both byte orders, bits of holding and input registers, whole registers as bools, and ten
/// coils and ten discrete inputs (two bytes of bits in one read); with the expected values and
/// a JSON spec for the pymodbus peer.
fn every_type_layout() -> Layout {
    let mut layout = Layout {
        points: Vec::new(),
        expected: Vec::new(),
        spec: Vec::new(),
        wire: Vec::new(),
    };
    let mut address = 0u16;
    for (type_name, data_type, told, value) in samples_of_every_type() {
        for (order, byte_order, word_order) in ORDERS {
            if data_type.width() == 1 && word_order == WordOrder::Little {
                continue; // word order does not apply to one register
            }
            layout.number(
                format!("{type_name}_{order}"),
                (Table::Holding, address),
                (type_name, data_type),
                (&told, &value),
                (byte_order, word_order),
            );
            address += 4;
        }
    }
    layout.string("text", address, 5, "PLC-42", ByteOrder::Big);
    // Odd length: the last character shares its register with a NUL.
    layout.string("text_le", address + 8, 4, "Abc-7", ByteOrder::Little);
    let bits = [Some(0), Some(1), Some(2), Some(15)];
    layout.register_bools(Table::Holding, address + 16, 0x8005, &bits);
    // A register ≠ 0 with its low byte 0 is true; 0 is false.
    layout.register_bools(Table::Holding, address + 17, 0x0100, &[None]);
    layout.register_bools(Table::Holding, address + 18, 0, &[None]);

    let mut address = 0u16;
    for (i, (type_name, data_type, told, value)) in samples_of_every_type().into_iter().enumerate()
    {
        let (order, byte_order, word_order) = if data_type.width() == 1 {
            ORDERS[i % 2]
        } else {
            ORDERS[i % 4]
        };
        layout.number(
            format!("in_{type_name}_{order}"),
            (Table::Input, address),
            (type_name, data_type),
            (&told, &value),
            (byte_order, word_order),
        );
        address += 4;
    }
    let bits = [Some(0), Some(1), Some(8)];
    layout.register_bools(Table::Input, address, 0x0102, &bits);
    layout.register_bools(Table::Input, address + 1, 0x0001, &[None]);

    let coils = [
        true, false, true, true, false, false, true, false, false, true,
    ];
    layout.bits(Table::Coil, 3, &coils);
    let inputs = coils.map(|b| !b);
    layout.bits(Table::DiscreteInput, 20, &inputs);
    layout
}

async fn check_every_type(kind: BusKind, regs: Option<&Registers>, unit: u8) {
    let Layout {
        points,
        expected,
        wire,
        ..
    } = every_type_layout();
    if let Some(regs) = regs {
        for item in &wire {
            match item {
                Wire::Words(Table::Input, address, w) => regs.set_input(unit, *address, w),
                Wire::Words(_, address, w) => regs.set_holding(unit, *address, w),
                Wire::Bits(Table::Coil, address, b) => regs.set_coil(unit, *address, b),
                Wire::Bits(_, address, b) => regs.set_discrete(unit, *address, b),
            }
        }
    }
    let names: Vec<String> = expected.iter().map(|(n, _)| n.clone()).collect();
    let (handle, mut rx, cancel) = start(
        bus(kind, Duration::from_millis(500)),
        vec![device("dev", unit, Duration::from_millis(100), points)],
    );
    let got = first_values(&mut rx, &names, Duration::from_secs(30)).await;
    assert_eq!(got, expected);
    let counters = handle.device("dev").unwrap().counters.snapshot();
    assert_eq!(counters.decode_errors, 0);
    assert_eq!(counters.exceptions, 0);
    cancel.cancel();
}

async fn network_simulator(framing: Framing) -> (Registers, SocketAddr, CancellationToken) {
    let regs = Registers::default();
    let sim = Simulator::bind_with(SocketAddr::from(([127, 0, 0, 1], 0)), regs.clone(), framing)
        .await
        .unwrap();
    let addr = sim.local_addr();
    let cancel = CancellationToken::new();
    tokio::spawn(sim.run(cancel.clone()));
    (regs, addr, cancel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_every_type_and_order_against_tokio_modbus_server() {
    let (regs, addr, _sim) = network_simulator(Framing::Tcp).await;
    let kind = BusKind::Tcp {
        host: addr.ip().to_string(),
        port: addr.port(),
    };
    check_every_type(kind, Some(&regs), 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_over_tcp_every_type_and_order_against_tokio_modbus_server() {
    let (regs, addr, _sim) = network_simulator(Framing::RtuOverTcp).await;
    let kind = BusKind::RtuOverTcp {
        host: addr.ip().to_string(),
        port: addr.port(),
    };
    check_every_type(kind, Some(&regs), 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_on_a_pty_every_type_and_order_against_our_simulator() {
    let dir = tempfile::tempdir().unwrap();
    let pty = PtyPair::new(dir.path());
    let regs = Registers::default();
    let cancel = CancellationToken::new();
    tokio::spawn(simulator::serve_rtu(
        serial(&pty.b),
        regs.clone(),
        cancel.clone(),
    ));
    check_every_type(
        BusKind::Rtu {
            serial: serial(&pty.a),
        },
        Some(&regs),
        7,
    )
    .await;
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_on_a_pty_every_type_and_order_against_pymodbus() {
    let dir = tempfile::tempdir().unwrap();
    let pty = PtyPair::new(dir.path());
    let spec = serde_json::Value::Array(every_type_layout().spec);
    let _peer = Peer(
        Command::new(python())
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/pymodbus_rtu_slave.py"))
            .arg(&pty.b)
            .arg("7")
            .arg(spec.to_string())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the pymodbus slave"),
    );
    check_every_type(
        BusKind::Rtu {
            serial: serial(&pty.a),
        },
        None,
        7,
    )
    .await;
}

/// Three devices on one RTU line (our simulator on a pty), one unplugged: the two others keep
/// their interval, the dead one is tried at backoff spacing, and read again soon after it
/// returns. Spacing is measured loosely (shared machine); the exact schedule is asserted on
/// paused time in `modbus::bus`'s tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_unplugged_device_does_not_stall_a_shared_rtu_line() {
    let dir = tempfile::tempdir().unwrap();
    let pty = PtyPair::new(dir.path());
    let regs = Registers::default();
    let sim = CancellationToken::new();
    tokio::spawn(simulator::serve_rtu(
        serial(&pty.b),
        regs.clone(),
        sim.clone(),
    ));
    regs.set_silent(3, true);
    let poll = Duration::from_millis(200);
    let devices = (1..=3)
        .map(|unit| {
            let p = point("v", Table::Holding, 0, DataType::U16, Encoding::default());
            device(&format!("d{unit}"), unit, poll, vec![p])
        })
        .collect();
    let (handle, mut rx, cancel) = start(
        bus(
            BusKind::Rtu {
                serial: serial(&pty.a),
            },
            Duration::from_millis(150),
        ),
        devices,
    );
    let mut times: [Vec<Instant>; 3] = Default::default();
    let collect_until = |rx: &mut Received, times: &mut [Vec<Instant>; 3], until: Instant| {
        while let Ok((at, sample)) = rx.try_recv() {
            let unit = usize::from(sample.device.as_bytes()[1] - b'0');
            if at <= until {
                times[unit - 1].push(at);
            }
        }
    };
    let down = Duration::from_secs(4);
    tokio::time::sleep(down).await;
    let revived = Instant::now();
    collect_until(&mut rx, &mut times, revived);
    let dead = handle.device("d3").unwrap();
    assert!(!dead.health.borrow().online);
    let attempts = dead.counters.snapshot().timeouts;
    regs.set_silent(3, false);
    // Back within one backoff period (backoff_max 1 s, plus its timeout and load slack).
    let mut health = dead.health.clone();
    tokio::time::timeout(Duration::from_secs(5), health.wait_for(|h| h.online))
        .await
        .expect("dead device read again after it returned")
        .unwrap();
    let back_after = revived.elapsed();
    cancel.cancel();
    sim.cancel();

    // Healthy devices: most of their polls happened, at about the interval.
    let expected = (down.as_millis() / poll.as_millis()) as usize;
    for (i, t) in times[..2].iter().enumerate() {
        assert!(
            t.len() * 10 >= expected * 6,
            "device {} polled {} of ~{expected} times",
            i + 1,
            t.len()
        );
        let mut gaps: Vec<Duration> = t.windows(2).map(|w| w[1] - w[0]).collect();
        gaps.sort();
        let median = gaps[gaps.len() / 2];
        assert!(
            median >= poll - Duration::from_millis(50)
                && median <= poll + Duration::from_millis(100),
            "device {} median gap {median:?}",
            i + 1
        );
    }
    // Without backoff the dead device would time out every 200 ms (~20 times in 4 s); with
    // 200 ms doubling to the 1 s cap it is tried about 6 times.
    assert!(
        (3..=9).contains(&attempts),
        "dead device attempts: {attempts}"
    );
    assert!(
        back_after <= Duration::from_secs(3),
        "read again after {back_after:?}"
    );
}

/// A USB RS-485 adapter unplugged and plugged back in: the port vanishes under a running `rtu`
/// bus (socat killed: reads and writes fail), stays gone for a while (opening fails), and comes
/// back at the same path (a new pair). The bus drops the dead handle, retries the open at its
/// backoff pace, and reads the device again once the port is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_bus_reopens_its_port_after_the_adapter_is_replugged() {
    let dir = tempfile::tempdir().unwrap();
    let pty = PtyPair::new(dir.path());
    let (a, b) = (pty.a.clone(), pty.b.clone());
    let regs = Registers::default();
    regs.set_holding(5, 0, &[1]);
    let sim = CancellationToken::new();
    tokio::spawn(simulator::serve_rtu(serial(&b), regs.clone(), sim.clone()));
    let poll = Duration::from_millis(100);
    let v = point("v", Table::Holding, 0, DataType::U16, Encoding::default());
    let (handle, mut rx, cancel) = start(
        bus(
            BusKind::Rtu { serial: serial(&a) },
            Duration::from_millis(500),
        ),
        vec![device("meter", 5, poll, vec![v])],
    );
    let got = first_values(&mut rx, &["v".into()], Duration::from_secs(30)).await;
    assert_eq!(got[0].1, Value::Int(1));

    // Unplugged: the port breaks, then cannot be opened. Every attempt is a counted failure,
    // spaced by the device's backoff (poll 100 ms doubling to the 1 s cap, jitter ≥ ½), not
    // a busy loop.
    let view = handle.device("meter").unwrap();
    let requests_before = view.counters.snapshot().requests;
    drop(pty);
    sim.cancel();
    let unplugged = Instant::now();
    let mut health = view.health.clone();
    tokio::time::timeout(
        Duration::from_secs(10),
        health.wait_for(|h| {
            h.consecutive_failures >= 4
                && h.last_error
                    .as_deref()
                    .is_some_and(|e| e.starts_with("cannot open serial port"))
        }),
    )
    .await
    .expect("the bus retries opening the vanished port")
    .unwrap();
    let down = unplugged.elapsed();
    assert!(down >= Duration::from_millis(500), "4 failures in {down:?}");
    let failures = u64::from(health.borrow().consecutive_failures);
    let counters = view.counters.snapshot();
    assert!(counters.errors >= 4, "{counters:?}");
    // One attempt per failed poll (one more may have started since).
    assert!(
        counters.requests - requests_before <= failures + 1,
        "{failures} failures, {counters:?}"
    );

    // Plugged back in at the same path (socat was killed, so its links are stale).
    let _ = std::fs::remove_file(&a);
    let _ = std::fs::remove_file(&b);
    let _pty = PtyPair::new(dir.path());
    regs.set_holding(5, 0, &[2]);
    let sim = CancellationToken::new();
    tokio::spawn(simulator::serve_rtu(serial(&b), regs.clone(), sim.clone()));
    let replugged = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (_, sample) = rx.recv().await.expect("bus owner running");
            if sample.value == Value::Int(2) {
                break;
            }
        }
    })
    .await
    .expect("the device is read again after the adapter returns");
    // Within one backoff period (the 1 s cap) plus load slack.
    let back_after = replugged.elapsed();
    assert!(back_after <= Duration::from_secs(3), "{back_after:?}");
    assert!(view.health.borrow().online);
    cancel.cancel();
    sim.cancel();
}

/// A line instrument on a pty that answers each poll with a good line between garbage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_line_values_arrive_and_garbage_is_counted() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let pty = PtyPair::new(dir.path());
    let mut line_serial = serial(&pty.a);
    line_serial.parity = Parity::None;
    let kind = BusKind::SerialLine {
        serial: line_serial.clone(),
        line: LineSettings {
            terminator: b"\r\n".to_vec(),
            poll: Some(b"W\r\n".to_vec()),
        },
    };
    let regex = |r: &str| PointSource::Line(LinePattern(regex::Regex::new(r).unwrap()));
    let mut weight = point(
        "weight",
        Table::Holding,
        0,
        DataType::F64,
        Encoding::default(),
    );
    weight.source = regex(r"^W=\s*([-0-9.]+) kg");
    let mut status = point(
        "status",
        Table::Holding,
        0,
        DataType::String { length: 0 },
        Encoding::default(),
    );
    status.source = regex(r"^S=(\w+)");
    let device = device("scale", 1, Duration::from_millis(100), vec![weight, status]);

    // The instrument: on every "W" it sends garbage, a weight and a status.
    let mut instrument_port = serial(&pty.b);
    instrument_port.parity = Parity::None;
    let port = fieldrelay::modbus::link::open_serial(&instrument_port).unwrap();
    let (read_half, mut write_half) = tokio::io::split(port);
    let instrument = tokio::spawn(async move {
        let mut lines = BufReader::new(read_half).lines();
        let mut n = 0u32;
        while let Ok(Some(line)) = lines.next_line().await {
            if line.trim_end() != "W" {
                continue;
            }
            n += 1;
            let reply = format!(
                "#!garbage {n}\r\n\u{1}\u{2}\r\nW= {}.5 kg\r\nW=1.2.3 kg\r\nS=STABLE\r\n",
                10 + n
            );
            let mut bytes = reply.into_bytes();
            bytes.extend_from_slice(b"\xff\xfe\r\n");
            if write_half.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });

    let (handle, mut rx, cancel) = start(bus(kind, Duration::from_millis(500)), vec![device]);
    let mut weights = Vec::new();
    let mut statuses = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while weights.len() < 4 || statuses.is_empty() {
            let (_, sample) = rx.recv().await.expect("serial_line task running");
            match &*sample.point {
                "weight" => weights.push(sample.value),
                _ => statuses.push(sample.value),
            }
        }
    })
    .await
    .expect("values from the instrument");
    assert!(
        weights
            .iter()
            .all(|w| matches!(w, Value::Float(f) if f.fract() == 0.5 && *f > 10.0)),
        "{weights:?}"
    );
    assert_eq!(statuses[0], Value::Str("STABLE".into()));
    // Lines are handled in order: the fourth weight means three whole replies were handled.
    let counters = handle.device("scale").unwrap().counters.snapshot();
    // Per reply: "#!garbage", control characters, invalid UTF-8 are garbage lines; "W=1.2.3" is
    // a capture that does not parse (and that line counts as garbage too).
    assert!(counters.garbage_lines >= 3 * 3, "{counters:?}");
    assert!(counters.decode_errors >= 3, "{counters:?}");
    assert!(counters.requests >= 3);
    assert!(handle.device("scale").unwrap().health.borrow().online);
    cancel.cancel();
    instrument.abort();
}

/// `fieldrelay simulate` on a simulator file: the shipped example, moved to free ports, serves
/// its register map over TCP and RTU-over-TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_serves_a_simulator_file() {
    let dir = tempfile::tempdir().unwrap();
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (tcp, rtu) = (free(), free());
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/simulator.yaml"),
    )
    .unwrap()
    .replace("port: 5020", &format!("port: {tcp}"))
    .replace("port: 5021", &format!("port: {rtu}"));
    let file = dir.path().join("sim.yaml");
    std::fs::write(&file, text).unwrap();
    let _sim = Peer(
        Command::new(env!("CARGO_BIN_EXE_fieldrelay"))
            .args(["simulate", "--config"])
            .arg(&file)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let text_point = point(
        "recipe",
        Table::Holding,
        50,
        DataType::String { length: 10 },
        Encoding::default(),
    );
    let counter = point(
        "count",
        Table::Holding,
        0,
        DataType::U32,
        Encoding::default(),
    );
    let (_h, mut rx, cancel) = start(
        bus(
            BusKind::Tcp {
                host: "127.0.0.1".into(),
                port: tcp,
            },
            Duration::from_millis(500),
        ),
        vec![device(
            "press",
            1,
            Duration::from_millis(100),
            vec![text_point, counter],
        )],
    );
    let got = first_values(
        &mut rx,
        &["recipe".into(), "count".into()],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(got[0].1, Value::Str("PART-4711".into()));
    assert!(matches!(got[1].1, Value::Int(n) if n >= 1000), "{got:?}");
    cancel.cancel();
    let little = Encoding {
        byte_order: ByteOrder::Little,
        word_order: WordOrder::Big,
    };
    let (_h, mut rx, cancel) = start(
        bus(
            BusKind::RtuOverTcp {
                host: "127.0.0.1".into(),
                port: rtu,
            },
            Duration::from_millis(500),
        ),
        vec![device(
            "meter",
            11,
            Duration::from_millis(100),
            vec![point("kwh", Table::Input, 0, DataType::I64, little)],
        )],
    );
    let got = first_values(&mut rx, &["kwh".into()], Duration::from_secs(30)).await;
    assert!(
        matches!(got[0].1, Value::Int(n) if n >= 123_456_789),
        "{got:?}"
    );
    cancel.cancel();
}

/// Modbus TCP replies that do not answer the request — one register (or bit byte) more or
/// less, a byte count that lies, another function code or unit, no byte count, a bad protocol
/// id, a stale transaction — against `tests/peers/malformed_tcp_slave.py`, which puts 666 (or
/// bits on) only in malformed frames: not one such value is ever taken, each malformed reply is
/// a counted error (a stale one is skipped and counted), and the good values keep coming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_tcp_replies_are_errors_never_values() {
    use std::io::{BufRead, BufReader};

    let mut child = Command::new("python3")
        .arg("tests/peers/malformed_tcp_slave.py")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start python3");
    let stdout = child.stdout.take().unwrap();
    let _peer = Peer(child);
    let (lines_tx, mut lines) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let port: u16 = lines
        .recv()
        .await
        .and_then(|l| l.strip_prefix("port ")?.parse().ok())
        .expect("the peer's port");
    let points = vec![
        point("reg", Table::Holding, 0, DataType::U16, Encoding::default()),
        point("flag", Table::Coil, 0, DataType::Bool, Encoding::default()),
    ];
    let mut dev = device("dev", 1, Duration::from_millis(10), points);
    dev.backoff_max = Duration::from_millis(20);
    dev.planning.coalesce = Coalesce::OnePerPoint;
    let kind = BusKind::Tcp {
        host: "127.0.0.1".into(),
        port,
    };
    let (handle, mut rx, cancel) = start(bus(kind, Duration::from_millis(300)), vec![dev]);

    let mut samples = Vec::new();
    let collect = async {
        loop {
            tokio::select! {
                Some((_, sample)) = rx.recv() => samples.push(sample),
                line = lines.recv() => if line.as_deref() == Some("cycle 3") { break },
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), collect)
        .await
        .expect("three cycles of every malformed reply within 120 s");
    cancel.cancel();
    while let Ok((_, sample)) = rx.try_recv() {
        samples.push(sample);
    }
    let value_of = |name: &str| -> Vec<Value> {
        samples
            .iter()
            .filter(|s| &*s.point == name)
            .map(|s| s.value.clone())
            .collect()
    };
    let (regs, flags) = (value_of("reg"), value_of("flag"));
    assert!(regs.len() >= 3 && flags.len() >= 3, "{regs:?} {flags:?}");
    assert!(regs.iter().all(|v| *v == Value::Int(100)), "{regs:?}");
    assert!(flags.iter().all(|v| *v == Value::Bool(false)), "{flags:?}");
    let counters = handle.device("dev").unwrap().counters.snapshot();
    // 8 malformed modes per kind and cycle, two kinds, three cycles.
    assert!(counters.errors >= 2 * 3 * 8, "{counters:?}");
    assert!(counters.stale_replies >= 2 * 3, "{counters:?}");
    assert!(counters.exceptions >= 2 * 3, "{counters:?}");
}
