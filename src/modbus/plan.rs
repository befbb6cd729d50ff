//! The read planner (pure): which requests read a device's points.
//!
//! Points of one table are sorted by address and merged into one request while the unused
//! registers between them are at most `max_gap` (bits: 8 × `max_gap`, the same bytes on the wire)
//! and the request stays within its limit: the protocol's 125 registers or 2000 bits per read,
//! or the device's smaller `max_registers_per_read`. Reading a few unused registers is far
//! cheaper than another request/response round trip, on a serial line most of all.
//! `coalesce: false` ([`Coalesce::OnePerPoint`]) gives every point its own request, for devices
//! that refuse reads spanning unmapped registers.
//!
//! Guarantees (property-tested below): every Modbus point is covered by exactly one read at its
//! own offset; no read exceeds its limit; every gap inside a read is at most the allowed gap, so
//! a read is never larger than needed by more than `max_gap` per gap. Bit points of one register
//! share that register's read. Serial_line points are not planned.

use crate::config::limits::{MAX_BITS_PER_READ, MAX_REGISTERS_PER_READ};
use crate::config::{Coalesce, Planning, PointConfig, Table};

/// One request and the points it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub table: Table,
    pub start: u16,
    pub count: u16,
    /// `(index into the device's points, offset of the point within this read)`.
    pub points: Vec<(usize, u16)>,
}

impl Read {
    /// The protocol function code of this read (1, 2, 3 or 4).
    pub fn function_code(&self) -> u8 {
        match self.table {
            Table::Coil => 1,
            Table::DiscreteInput => 2,
            Table::Holding => 3,
            Table::Input => 4,
        }
    }
}

/// `(limit, max gap)` of a read from `table` under `planning`.
pub fn limits(table: Table, planning: &Planning) -> (u16, u16) {
    if table.is_bits() {
        (MAX_BITS_PER_READ, planning.max_gap.saturating_mul(8))
    } else {
        (
            planning
                .max_registers_per_read
                .clamp(1, MAX_REGISTERS_PER_READ),
            planning.max_gap,
        )
    }
}

/// Plans the reads for the Modbus points among `points`.
pub fn plan(points: &[PointConfig], planning: &Planning) -> Vec<Read> {
    let mut order: Vec<(usize, Table, u16, u16)> = points
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            p.modbus()
                .map(|m| (i, m.table, m.address, p.data_type.width().max(1)))
        })
        .collect();
    order.sort_by_key(|&(i, table, address, _)| (table, address, i));

    let mut reads: Vec<Read> = Vec::new();
    for (i, table, address, width) in order {
        let (limit, max_gap) = limits(table, planning);
        // u32 arithmetic: address + width can exceed u16 at the top of the address space.
        let point_end = u32::from(address) + u32::from(width);
        if let Some(read) = reads.last_mut() {
            let read_end = u32::from(read.start) + u32::from(read.count);
            let gap_ok = u32::from(address) <= read_end + u32::from(max_gap);
            let new_end = read_end.max(point_end);
            let fits = new_end - u32::from(read.start) <= u32::from(limit);
            if planning.coalesce == Coalesce::Merge && read.table == table && gap_ok && fits {
                read.count = (new_end - u32::from(read.start)) as u16;
                read.points.push((i, address - read.start));
                continue;
            }
        }
        reads.push(Read {
            table,
            start: address,
            count: width,
            points: vec![(i, 0)],
        });
    }
    reads
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DataType;
    use crate::modbus::fixtures;
    use proptest::prelude::*;

    fn point(table: Table, address: u16, data_type: DataType) -> PointConfig {
        fixtures::point(&format!("p{address}"), table, address, data_type)
    }

    const DEFAULT: Planning = Planning {
        max_gap: 8,
        max_registers_per_read: 125,
        coalesce: Coalesce::Merge,
    };

    #[test]
    fn near_points_share_a_read_far_ones_do_not() {
        let points = vec![
            point(Table::Holding, 0, DataType::F32),
            point(Table::Holding, 2, DataType::U16),
            point(Table::Holding, 4, DataType::U64),
            point(Table::Holding, 100, DataType::U16),
            point(Table::Coil, 0, DataType::Bool),
            point(Table::Input, 0, DataType::I16),
        ];
        let reads = plan(&points, &DEFAULT);
        assert_eq!(reads.len(), 4);
        let holding: Vec<_> = reads.iter().filter(|r| r.table == Table::Holding).collect();
        assert_eq!((holding[0].start, holding[0].count), (0, 8));
        assert_eq!(holding[0].points, vec![(0, 0), (1, 2), (2, 4)]);
        assert_eq!((holding[1].start, holding[1].count), (100, 1));
    }

    #[test]
    fn device_quirks_limit_merging() {
        let points: Vec<_> = (0..10)
            .map(|i| point(Table::Holding, i * 2, DataType::U32))
            .collect();
        let small = Planning {
            max_registers_per_read: 6,
            ..DEFAULT
        };
        let reads = plan(&points, &small);
        assert_eq!(
            reads.iter().map(|r| r.count).collect::<Vec<_>>(),
            vec![6, 6, 6, 2]
        );
        let apart = Planning {
            coalesce: Coalesce::OnePerPoint,
            ..DEFAULT
        };
        assert_eq!(plan(&points, &apart).len(), 10);
        let no_gap = Planning {
            max_gap: 0,
            ..DEFAULT
        };
        let spaced = [
            point(Table::Input, 0, DataType::U16),
            point(Table::Input, 1, DataType::U16),
            point(Table::Input, 3, DataType::U16),
        ];
        assert_eq!(plan(&spaced, &no_gap).len(), 2);
        assert_eq!(plan(&spaced, &DEFAULT).len(), 1);
    }

    #[test]
    fn top_of_address_space_does_not_overflow() {
        let reads = plan(
            &[
                point(Table::Holding, 65533, DataType::U16),
                point(Table::Holding, 65534, DataType::U32),
            ],
            &DEFAULT,
        );
        assert_eq!(reads.len(), 1);
        assert_eq!((reads[0].start, reads[0].count), (65533, 3));
    }

    fn arb_point() -> impl Strategy<Value = PointConfig> {
        let types = prop_oneof![
            Just(DataType::U16),
            Just(DataType::Bool),
            Just(DataType::I32),
            Just(DataType::F32),
            Just(DataType::U64),
            Just(DataType::F64),
            (1u16..20).prop_map(|length| DataType::String { length }),
        ];
        prop_oneof![
            (0u16..3000, types).prop_map(|(a, t)| point(Table::Holding, a, t)),
            (0u16..3000).prop_map(|a| point(Table::Input, a, DataType::U16)),
            (0u16..5000).prop_map(|a| point(Table::Coil, a, DataType::Bool)),
        ]
    }

    fn arb_planning() -> impl Strategy<Value = Planning> {
        (0u16..=20, 20u16..=125, any::<bool>()).prop_map(|(max_gap, max, merge)| Planning {
            max_gap,
            max_registers_per_read: max,
            coalesce: if merge {
                Coalesce::Merge
            } else {
                Coalesce::OnePerPoint
            },
        })
    }

    proptest! {
        #[test]
        fn every_point_covered_once_within_limits_and_gaps(
            points in proptest::collection::vec(arb_point(), 0..80),
            planning in arb_planning(),
        ) {
            let reads = plan(&points, &planning);
            let mut covered = vec![0usize; points.len()];
            for read in &reads {
                let (limit, max_gap) = limits(read.table, &planning);
                prop_assert!(read.count >= 1 && read.count <= limit);
                let mut spans = Vec::new();
                for &(i, offset) in &read.points {
                    let p = &points[i];
                    let m = p.modbus().unwrap();
                    covered[i] += 1;
                    prop_assert_eq!(m.table, read.table);
                    prop_assert_eq!(u32::from(read.start) + u32::from(offset), u32::from(m.address));
                    spans.push((u32::from(m.address), u32::from(m.address) + u32::from(p.data_type.width())));
                }
                if planning.coalesce == Coalesce::OnePerPoint {
                    prop_assert_eq!(read.points.len(), 1);
                }
                // The read starts at its first point, ends at its last covered register, and
                // every hole between covered registers is at most the allowed gap.
                spans.sort();
                prop_assert_eq!(spans[0].0, u32::from(read.start));
                let mut end = spans[0].1;
                for &(start, stop) in &spans[1..] {
                    prop_assert!(start <= end + u32::from(max_gap), "hole {} > {}", start - end, max_gap);
                    end = end.max(stop);
                }
                prop_assert_eq!(u32::from(read.start) + u32::from(read.count), end);
            }
            prop_assert!(covered.iter().all(|&c| c == 1));
        }
    }
}
