//! `POST /jobs/batch`: the body, as bytes. A refusal is a bounded 4xx that names a job of the batch
//! when one job is at fault; an accepted batch holds 1 to 1,000 jobs, each re-validating to itself.
#![no_main]

use jobq_functions::create_jobs::{MAX_BATCH, parse};
use jobq_fuzz::{assert_refusal, assert_valid_job, post_json};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    match parse(&post_json("/jobs/batch", body)) {
        Ok(jobs) => {
            assert!((1..=MAX_BATCH).contains(&jobs.len()), "{} jobs", jobs.len());
            for job in &jobs {
                assert_valid_job(job);
            }
        }
        Err(err) => {
            let index = match &err {
                jobq_functions::ApiError::InBatch { index, .. } => Some(*index),
                _ => None,
            };
            let (_, message) = assert_refusal(err);
            if let Some(index) = index {
                assert!(index < MAX_BATCH, "jobs[{index}]");
                assert!(message.starts_with(&format!("jobs[{index}]: ")), "{message}");
            }
        }
    }
});
