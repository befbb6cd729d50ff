//! The read planner (pure): which requests read a device's points.
//!
//! Points of the same table are sorted by address and merged into one request while the gap
//! between them is at most [`MAX_GAP_REGISTERS`] (or [`MAX_GAP_BITS`]) and the request stays
//! within the protocol limit (125 registers or 2000 bits per read). Reading a few unused
//! registers is far cheaper than another request/response round trip, on a serial line most of
//! all. Every point is covered by exactly one read; points that overlap (validation refuses that)
//! would still each be covered once.

use crate::config::{PointConfig, Table};

/// Protocol limit for FC 3/4 (read holding/input registers).
pub const MAX_REGISTERS_PER_READ: u16 = 125;
/// Protocol limit for FC 1/2 (read coils/discrete inputs).
pub const MAX_BITS_PER_READ: u16 = 2000;
/// Unused registers a read may span to join two points: 8 registers cost 16 bytes on the wire,
/// about 1.4 ms at 115200 baud, less than one extra request.
pub const MAX_GAP_REGISTERS: u16 = 8;
/// Unused bits a read may span (64 bits = 8 bytes).
pub const MAX_GAP_BITS: u16 = 64;

/// One request and the points it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub table: Table,
    pub start: u16,
    pub count: u16,
    /// `(index into the device's points, offset of the point within this read)`.
    pub points: Vec<(usize, u16)>,
}

/// Plans the reads for `points`.
pub fn plan(points: &[PointConfig]) -> Vec<Read> {
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by_key(|&i| (points[i].table, points[i].address));

    let mut reads: Vec<Read> = Vec::new();
    for i in order {
        let point = &points[i];
        let width = point.data_type.width();
        let (limit, max_gap) = if point.table.is_bits() {
            (MAX_BITS_PER_READ, MAX_GAP_BITS)
        } else {
            (MAX_REGISTERS_PER_READ, MAX_GAP_REGISTERS)
        };
        // u32 arithmetic: address + width can exceed u16 at the top of the address space.
        let point_end = u32::from(point.address) + u32::from(width);
        if let Some(read) = reads.last_mut() {
            let read_end = u32::from(read.start) + u32::from(read.count);
            let gap_ok = u32::from(point.address) <= read_end + u32::from(max_gap);
            let new_end = read_end.max(point_end);
            let fits = new_end - u32::from(read.start) <= u32::from(limit);
            if read.table == point.table && gap_ok && fits {
                read.count = (new_end - u32::from(read.start)) as u16;
                read.points.push((i, point.address - read.start));
                continue;
            }
        }
        reads.push(Read {
            table: point.table,
            start: point.address,
            count: width,
            points: vec![(i, 0)],
        });
    }
    reads
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DataType, PublishMode, Qos};
    use proptest::prelude::*;

    fn point(table: Table, address: u16, data_type: DataType) -> PointConfig {
        PointConfig {
            name: format!("p{address}"),
            table,
            address,
            data_type,
            scale: 1.0,
            offset: 0.0,
            qos: Qos::AtLeastOnce,
            retain: false,
            publish: PublishMode::OnChange,
            deadband: 0.0,
        }
    }

    #[test]
    fn near_points_share_a_read_far_ones_do_not() {
        let points = vec![
            point(Table::Holding, 0, DataType::F32),
            point(Table::Holding, 2, DataType::U16),
            point(Table::Holding, 4, DataType::U32),
            point(Table::Holding, 100, DataType::U16),
            point(Table::Coil, 0, DataType::Bool),
            point(Table::Input, 0, DataType::I16),
        ];
        let reads = plan(&points);
        assert_eq!(reads.len(), 4);
        let holding: Vec<_> = reads.iter().filter(|r| r.table == Table::Holding).collect();
        assert_eq!((holding[0].start, holding[0].count), (0, 6));
        assert_eq!(holding[0].points, vec![(0, 0), (1, 2), (2, 4)]);
        assert_eq!((holding[1].start, holding[1].count), (100, 1));
    }

    #[test]
    fn top_of_address_space_does_not_overflow() {
        let reads = plan(&[
            point(Table::Holding, 65533, DataType::U16),
            point(Table::Holding, 65534, DataType::U32),
        ]);
        assert_eq!(reads.len(), 1);
        assert_eq!((reads[0].start, reads[0].count), (65533, 3));
    }

    fn arb_point() -> impl Strategy<Value = PointConfig> {
        let types = prop_oneof![
            Just(DataType::U16),
            Just(DataType::I16),
            Just(DataType::U32),
            Just(DataType::I32),
            Just(DataType::F32)
        ];
        prop_oneof![
            (0u16..3000, types).prop_map(|(a, t)| point(Table::Holding, a, t)),
            (0u16..3000).prop_map(|a| point(Table::Input, a, DataType::U16)),
            (0u16..5000).prop_map(|a| point(Table::Coil, a, DataType::Bool)),
        ]
    }

    proptest! {
        #[test]
        fn every_point_covered_once_within_limits(points in proptest::collection::vec(arb_point(), 0..80)) {
            let reads = plan(&points);
            let mut covered = vec![0usize; points.len()];
            for read in &reads {
                let limit = if read.table.is_bits() { MAX_BITS_PER_READ } else { MAX_REGISTERS_PER_READ };
                prop_assert!(read.count >= 1 && read.count <= limit);
                let mut end = 0u32;
                for &(i, offset) in &read.points {
                    let p = &points[i];
                    covered[i] += 1;
                    prop_assert_eq!(p.table, read.table);
                    prop_assert_eq!(u32::from(read.start) + u32::from(offset), u32::from(p.address));
                    end = end.max(u32::from(p.address) + u32::from(p.data_type.width()));
                }
                // The read starts at its first point and ends at its last covered register.
                prop_assert_eq!(u32::from(read.start) + u32::from(read.count), end);
                prop_assert!(read.points.iter().any(|&(_, o)| o == 0));
            }
            prop_assert!(covered.iter().all(|&c| c == 1));
        }
    }
}
