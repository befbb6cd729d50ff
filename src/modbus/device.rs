//! What turns the data of a read into samples (pure): a device's points with their shared
//! names, encodings and change filters.

use std::sync::Arc;

use tokio::time::Instant;
use tracing::debug;

use super::counters::DeviceCounters;
use super::decode::{self, DecodeError, Scaling};
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
                            Scaling {
                                scale: point.scale,
                                offset: point.offset,
                            },
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
