//! The DLQ `cursor` parameter, as text. A cursor that parses lies within what Postgres compares and
//! prints as a cursor that parses back to it; and every cursor the API can hand out (any finish time
//! from 1970 to 9999, any job id) parses back to itself.
#![no_main]

use chrono::DateTime;
use jobq_fuzz::assert_cursor_round_trips;
use jobq_shared::JobId;
use jobq_shared::store::DeadCursor;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(cursor) = text.parse::<DeadCursor>() {
        let micros = cursor.completed_at.timestamp_micros();
        assert!((0..=253_402_300_799_999_999).contains(&micros), "{text:?}: {micros}");
        assert_cursor_round_trips(&cursor);
    }

    // The same bytes as a finish time and a job id: a cursor the API could hand out.
    if let (Some(micros), Some(id)) = (data.get(..8), data.get(8..24)) {
        let micros = i64::from_le_bytes(micros.try_into().expect("8 bytes")).rem_euclid(253_402_300_800_000_000);
        let id = JobId(uuid::Uuid::from_bytes(id.try_into().expect("16 bytes")));
        let completed_at = DateTime::from_timestamp_micros(micros).expect("a time within 1970 to 9999");
        assert_cursor_round_trips(&DeadCursor { completed_at, id });
    }
});
