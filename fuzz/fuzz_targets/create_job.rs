//! `POST /jobs`: the body, as bytes. A refusal is a bounded 4xx; an accepted job re-validates to itself.
#![no_main]

use jobq_fuzz::{assert_refusal, assert_valid_job, post_json};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    match jobq_functions::create_job::parse(&post_json("/jobs", body)) {
        Ok(job) => assert_valid_job(&job),
        Err(err) => {
            assert_refusal(err);
        }
    }
});
