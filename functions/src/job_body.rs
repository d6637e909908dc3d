//! A job as every response shows it: the record of [`Job`], with its id under both `jobId` (the
//! seed's name) and `id` (ChronoQueue's).

use jobq_shared::{Job, JobId};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct JobBody<'a> {
    id: JobId,
    #[serde(flatten)]
    job: &'a Job,
}

impl<'a> JobBody<'a> {
    pub fn new(job: &'a Job) -> Self {
        JobBody { id: job.id, job }
    }
}

#[cfg(test)]
mod tests {
    use super::JobBody;
    use jobq_shared::{Job, JobId, Status};

    #[test]
    fn the_id_is_given_under_both_names_beside_every_field_of_the_job() {
        let now = chrono::Utc::now();
        let job = Job {
            id: JobId::new(),
            job_type: "TEST".into(),
            queue: "default".into(),
            payload: serde_json::json!({"a": 1}),
            status: Status::Pending,
            attempts: 0,
            max_attempts: 3,
            priority: 50,
            run_at: now,
            timeout_ms: 1000,
            idempotency_key: None,
            last_error: None,
            created_at: now,
            updated_at: now,
            started_at: None,
            completed_at: None,
            lease_expires_at: None,
            cancel_requested_at: None,
            traceparent: None,
            schedule: None,
            history: Vec::new(),
            waiting_on: None,
            held_back: None,
        };
        let plain = serde_json::to_value(&job).expect("job");
        let body = serde_json::to_value(JobBody::new(&job)).expect("body");
        assert_eq!(body["id"], body["jobId"]);
        assert_eq!(body["id"], job.id.to_string());
        let mut without_id = body.as_object().expect("object").clone();
        without_id.remove("id");
        assert_eq!(serde_json::Value::Object(without_id), plain);
    }
}
