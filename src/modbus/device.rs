//! What turns the data of a read into samples (pure): a device's points with their shared
//! names, encodings and change filters.

use std::sync::Arc;

use tokio::time::Instant;
use tracing::debug;

use super::counters::DeviceCounters;
use super::decode::{self, DecodeError};
use super::frame::{Exception, Response};
use super::plan::Read;
use crate::config::{DeviceConfig, PointConfig};
use crate::sample::{ChangeFilter, Sample, Value};

/// One point read once (for `probe`): the registers (or bits) of the point as received and
/// their decoded value, or the exception its read got.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbedPoint {
    pub point: String,
    pub result: Result<(Response, Result<Value, DecodeError>), Exception>,
}

pub struct PointTable {
    device: Arc<str>,
    /// Shared by every sample of the point; names never change, so they are not copied per poll.
    names: Vec<Arc<str>>,
    points: Vec<PointConfig>,
    filters: Vec<ChangeFilter>,
}

impl PointTable {
    pub fn new(device: &DeviceConfig) -> Self {
        PointTable {
            device: Arc::from(device.name.as_str()),
            names: device
                .points
                .iter()
                .map(|p| Arc::from(p.name.as_str()))
                .collect(),
            points: device.points.clone(),
            filters: device
                .points
                .iter()
                .map(|p| ChangeFilter::new(p.reporting))
                .collect(),
        }
    }

    pub fn device(&self) -> &Arc<str> {
        &self.device
    }

    /// Decodes point `index` from the data of `read` (`offset` within it).
    pub fn decode(
        &self,
        index: usize,
        offset: u16,
        data: &Response,
    ) -> (Response, Result<Value, DecodeError>) {
        let point = &self.points[index];
        let offset = usize::from(offset);
        let width = usize::from(point.data_type.width());
        let short = |got| DecodeError::Short {
            data_type: point.data_type,
            needed: offset + width,
            got,
        };
        match data {
            Response::Bits(bits) => match bits.get(offset) {
                Some(&b) => (Response::Bits(vec![b]), Ok(decode::decode_bit(b))),
                None => (Response::Bits(Vec::new()), Err(short(bits.len()))),
            },
            Response::Words(words) => {
                let raw = words.get(offset..offset + width).unwrap_or(&[]).to_vec();
                let value = match point.modbus() {
                    Some(source) => match (source.bit, raw.first()) {
                        (Some(bit), Some(&word)) => Ok(decode::decode_register_bit(word, bit)),
                        _ => decode::decode_registers(
                            point.data_type,
                            source.encoding,
                            &raw,
                            decode::Scaling::of(point),
                        ),
                    },
                    None => Err(short(0)),
                };
                (Response::Words(raw), value)
            }
            Response::Written => (Response::Written, Err(short(0))),
        }
    }

    /// Samples of the points `read` covers that pass their change filter. Points whose value
    /// cannot be decoded are counted in `decode_errors` and skipped.
    pub fn samples(
        &mut self,
        read: &Read,
        data: &Response,
        ts_ms: i64,
        now: Instant,
        counters: &DeviceCounters,
    ) -> Vec<Sample> {
        let mut samples = Vec::with_capacity(read.points.len());
        for &(index, offset) in &read.points {
            match self.decode(index, offset, data).1 {
                Ok(value) => {
                    if let Some(sample) = self.admit(index, value, ts_ms, now) {
                        samples.push(sample);
                    }
                }
                Err(error) => {
                    DeviceCounters::bump(&counters.decode_errors);
                    debug!(device = %self.device, point = %self.points[index].name, %error, "cannot decode point");
                }
            }
        }
        samples
    }

    /// A sample of point `index` if its change filter admits `value`.
    pub fn admit(
        &mut self,
        index: usize,
        value: Value,
        ts_ms: i64,
        now: Instant,
    ) -> Option<Sample> {
        let point = &self.points[index];
        self.filters[index]
            .admit(value.clone(), now)
            .then(|| Sample {
                device: self.device.clone(),
                point: self.names[index].clone(),
                value,
                ts_ms,
                qos: point.qos,
                retain: point.retain,
            })
    }

    pub fn points(&self) -> &[PointConfig] {
        &self.points
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{
        ByteOrder, DataType, Encoding, LinePattern, PointSource, PublishMode, Qos, Table, WordOrder,
    };
    use crate::modbus::fixtures::{bit_point, device, point};

    fn table(points: Vec<PointConfig>) -> PointTable {
        PointTable::new(&device("dev", 1, points))
    }

    fn words(w: &[u16]) -> Response {
        Response::Words(w.to_vec())
    }

    #[test]
    fn a_bit_of_a_register_is_taken_from_the_register_at_its_offset() {
        let t = table(vec![
            bit_point("b0", Table::Holding, 0, 0),
            bit_point("b2", Table::Holding, 0, 2),
            bit_point("b15", Table::Input, 0, 15),
        ]);
        // Register 0 has every bit but 0 and 2 set; register 1 only bits 2 and 15.
        let data = words(&[0xFFFA, 0x8004]);
        assert_eq!(
            t.decode(0, 0, &data),
            (words(&[0xFFFA]), Ok(Value::Bool(false)))
        );
        assert_eq!(t.decode(1, 0, &data).1, Ok(Value::Bool(false)));
        assert_eq!(t.decode(0, 1, &data).1, Ok(Value::Bool(false)));
        assert_eq!(
            t.decode(1, 1, &data),
            (words(&[0x8004]), Ok(Value::Bool(true)))
        );
        assert_eq!(t.decode(2, 1, &data).1, Ok(Value::Bool(true)));
        assert_eq!(t.decode(2, 0, &data).1, Ok(Value::Bool(true)));
        // Past the end of the read: a decode error, no register.
        let (raw, value) = t.decode(1, 2, &data);
        assert_eq!(raw, words(&[]));
        assert!(matches!(value, Err(DecodeError::Short { got: 0, .. })));
    }

    #[test]
    fn a_whole_register_bool_is_true_when_not_zero() {
        let t = table(vec![point("on", Table::Holding, 0, DataType::Bool)]);
        assert_eq!(t.decode(0, 0, &words(&[0x0100])).1, Ok(Value::Bool(true)));
        assert_eq!(t.decode(0, 0, &words(&[0])).1, Ok(Value::Bool(false)));
    }

    #[test]
    fn bits_of_a_bit_table_are_taken_at_their_offset() {
        let t = table(vec![point("c", Table::Coil, 0, DataType::Bool)]);
        let data = Response::Bits(vec![false, true, false]);
        assert_eq!(
            t.decode(0, 1, &data),
            (Response::Bits(vec![true]), Ok(Value::Bool(true)))
        );
        assert_eq!(t.decode(0, 2, &data).1, Ok(Value::Bool(false)));
        let (raw, value) = t.decode(0, 3, &data);
        assert_eq!(raw, Response::Bits(Vec::new()));
        assert_eq!(
            value,
            Err(DecodeError::Short {
                data_type: DataType::Bool,
                needed: 4,
                got: 3
            })
        );
    }

    #[test]
    fn a_wide_point_takes_its_registers_at_its_offset_in_its_order() {
        let mut cdab = point("cdab", Table::Holding, 0, DataType::U32);
        if let PointSource::Modbus(source) = &mut cdab.source {
            source.encoding = Encoding {
                byte_order: ByteOrder::Big,
                word_order: WordOrder::Little,
            };
        }
        let mut scaled = point("scaled", Table::Holding, 0, DataType::I16);
        scaled.scale = 0.1;
        let t = table(vec![
            point("abcd", Table::Holding, 0, DataType::U32),
            cdab,
            scaled,
        ]);
        let data = words(&[9, 0x0001, 0x0002, 0xFFF6]);
        assert_eq!(
            t.decode(0, 1, &data),
            (words(&[1, 2]), Ok(Value::Int(0x0001_0002)))
        );
        assert_eq!(t.decode(1, 1, &data).1, Ok(Value::Int(0x0002_0001)));
        assert_eq!(t.decode(2, 3, &data).1, Ok(Value::Float(-1.0)));
        // Only one of its two registers in the read.
        assert!(matches!(
            t.decode(0, 3, &data).1,
            Err(DecodeError::Short { .. })
        ));
    }

    #[test]
    fn data_that_is_not_registers_of_a_modbus_point_is_an_error() {
        let mut line = point("line", Table::Holding, 0, DataType::U16);
        line.source = PointSource::Line(LinePattern(regex::Regex::new("(x)").unwrap()));
        let t = table(vec![point("v", Table::Holding, 0, DataType::U16), line]);
        assert!(t.decode(0, 0, &Response::Written).1.is_err());
        assert!(t.decode(1, 0, &words(&[1])).1.is_err());
    }

    #[test]
    fn samples_skip_and_count_bad_points_and_honour_change_filters() {
        let mut changes = point("changes", Table::Holding, 0, DataType::U16);
        changes.reporting.publish = PublishMode::OnChange;
        changes.qos = Qos::AtMostOnce;
        changes.retain = true;
        let t = &mut table(vec![
            point("every", Table::Holding, 0, DataType::U16),
            changes,
            point("nan", Table::Holding, 0, DataType::F32),
        ]);
        let read = Read {
            table: Table::Holding,
            start: 10,
            count: 4,
            points: vec![(0, 0), (1, 1), (2, 2)],
        };
        let counters = DeviceCounters::default();
        let now = Instant::now();
        let data = words(&[5, 6, 0x7FC0, 0]); // f32 NaN
        let first = t.samples(&read, &data, 1_000, now, &counters);
        let names: Vec<&str> = first.iter().map(|s| &*s.point).collect();
        assert_eq!(names, ["every", "changes"]);
        assert_eq!(first[1].value, Value::Int(6));
        assert_eq!((first[1].qos, first[1].retain), (Qos::AtMostOnce, true));
        assert_eq!((&*first[1].device, first[1].ts_ms), ("dev", 1_000));
        assert_eq!(counters.snapshot().decode_errors, 1);
        // Same values again: only the every-poll point; a change passes the filter.
        let again = t.samples(&read, &data, 2_000, now, &counters);
        assert_eq!(again.len(), 1);
        assert_eq!(&*again[0].point, "every");
        let moved = t.samples(&read, &words(&[5, 7, 0, 0]), 3_000, now, &counters);
        assert_eq!(moved.len(), 3);
        assert_eq!(moved[1].value, Value::Int(7));
        assert_eq!(counters.snapshot().decode_errors, 2);
    }
}
