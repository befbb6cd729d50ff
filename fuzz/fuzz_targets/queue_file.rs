//! Any bytes in a queue file (a damaged one a quarantine left, a copy cut short) are walked page
//! by page without a panic, a hang or a read outside the file: rows come out in `seq` order,
//! each once, and the lost ranges are well formed.
#![no_main]

use std::ops::ControlFlow;

use fieldrelay::queue::salvage::Salvage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A header the walk accepts (page size 512, UTF-8) in front of the input, so the fuzzer
    // spends its time on pages rather than on the magic string.
    let mut file = b"SQLite format 3\0\x02\x00\x01\x01\x00\x40\x20\x20".to_vec();
    file.resize(56, 0);
    file.extend_from_slice(&[0, 0, 0, 1]);
    file.extend_from_slice(data);
    let path = std::env::temp_dir().join(format!("fieldrelay-fuzz-{}.db", std::process::id()));
    if std::fs::write(&path, &file).is_err() {
        return;
    }
    if let Ok(salvage) = Salvage::open(&path) {
        let mut last = 0;
        salvage.visit_rows(0, |row| {
            let seq = match row {
                Ok(row) => row.seq,
                Err(fieldrelay::queue::QueueError::Decode { seq, .. }) => seq,
                Err(other) => panic!("{other}"),
            };
            assert!(seq > last, "rows in seq order, each once");
            last = seq;
            ControlFlow::Continue(())
        });
        for lost in salvage.lost_after(0) {
            assert!(lost.to.is_none_or(|to| to >= lost.from));
        }
    }
    let _ = Salvage::cut_short(&path);
});
