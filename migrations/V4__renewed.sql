-- When the holder of a job's lease last renewed it (a heartbeat); NULL from each claim until the
-- first renewal. A lease that runs out never renewed belonged to a worker that never showed it
-- held the job: the answer to its claim was lost, or it died before its first heartbeat. The
-- reaper gives such a job back uncharged, a bounded number of times (counted in `releases`).
ALTER TABLE jobs ADD COLUMN renewed_at timestamptz;
