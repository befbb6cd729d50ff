//! Small helpers over `prometheus-client`'s encoder for collectors that read values at scrape
//! time (the counters live in the parts that own them, as plain atomics).

use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabelSet, MetricEncoder,
    NoLabelSet,
};
use prometheus_client::metrics::MetricType;

use crate::modbus::DurationSnapshot;

type Result = std::result::Result<(), std::fmt::Error>;

/// One unlabelled gauge.
pub(crate) fn gauge<V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: V,
) -> Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    metric.encode_gauge(&value)
}

/// The value of a counter (the encoder appends `_total` to its name).
pub(crate) fn counter<V: EncodeCounterValue>(metric: &mut MetricEncoder, value: V) -> Result {
    metric.encode_counter::<NoLabelSet, V, u64>(&value, None)
}

/// A metric with one sample per label set: `rows` gives the labels and `write` encodes the
/// value of each.
pub(crate) fn family<L, T>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: &[(L, T)],
    mut write: impl FnMut(&mut MetricEncoder, &T) -> Result,
) -> Result
where
    L: EncodeLabelSet,
{
    if rows.is_empty() {
        return Ok(());
    }
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in rows {
        let mut sample = metric.encode_family(labels)?;
        write(&mut sample, value)?;
    }
    Ok(())
}

/// A counter family with one label (`label`), one sample per `(value, count)` of `counts`:
/// outcomes counted by kind.
pub(crate) fn counts_by(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    counts: impl IntoIterator<Item = (&'static str, u64)>,
) -> Result {
    let rows: Vec<([(&str, &str); 1], u64)> = counts
        .into_iter()
        .map(|(value, count)| ([(label, value)], count))
        .collect();
    family(
        encoder,
        name,
        help,
        MetricType::Counter,
        &rows,
        |m, count| counter(m, *count),
    )
}

/// One counter family per `(name, help, field)` of `fields`, with one sample per row of `rows`:
/// `read` gives the value of `field` for a row.
pub(crate) fn counter_families<L, T, F>(
    encoder: &mut DescriptorEncoder,
    fields: &[(&str, &str, F)],
    rows: &[(L, T)],
    read: impl Fn(&F, &T) -> u64,
) -> Result
where
    L: EncodeLabelSet,
{
    for (name, help, field) in fields {
        family(
            encoder,
            name,
            help,
            MetricType::Counter,
            rows,
            |metric, row| counter(metric, read(field, row)),
        )?;
    }
    Ok(())
}

/// A histogram from cumulative buckets (the encoder wants per-bucket counts).
pub(crate) fn histogram(metric: &mut MetricEncoder, snapshot: &DurationSnapshot) -> Result {
    let mut below = 0;
    let buckets: Vec<(f64, u64)> = snapshot
        .buckets
        .iter()
        .map(|&(bound, cumulative)| {
            let own = cumulative.saturating_sub(below);
            below = cumulative;
            (bound, own)
        })
        .collect();
    metric.encode_histogram::<NoLabelSet>(snapshot.sum_seconds, snapshot.count, &buckets, None)
}
