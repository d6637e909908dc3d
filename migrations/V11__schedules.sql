-- Recurring jobs: a schedule fires one job per tick of its cron expression.
CREATE TABLE schedules (
    name          text        PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 200),
    cron          text        NOT NULL,
    -- An IANA time zone name: the cron expression is read on its wall clock.
    timezone      text        NOT NULL,
    -- The create-job body each tick's job is made from.
    job           jsonb       NOT NULL,
    paused        boolean     NOT NULL DEFAULT false,
    missed_fires  text        NOT NULL CHECK (missed_fires IN ('skip', 'coalesce', 'catchUp')),
    overlap       text        NOT NULL CHECK (overlap IN ('allow', 'skip')),
    -- The next tick to fire. Firing moves it on by compare-and-set, in the statement that inserts
    -- the tick's job: whoever fires a tick, it is fired once.
    next_fire_at  timestamptz NOT NULL,
    -- The tick of the last job fired, when it was fired (by the database clock), and its job.
    last_tick     timestamptz,
    last_fired_at timestamptz,
    last_job_id   uuid,
    -- Ticks that made a job, and ticks that did not (missed while nothing fired, or skipped
    -- because the previous job was still unfinished).
    fired         bigint      NOT NULL DEFAULT 0,
    skipped       bigint      NOT NULL DEFAULT 0,
    -- Why the last firing failed, until one succeeds.
    last_error    text,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,

    CONSTRAINT fired_schedules_know_their_last_tick
        CHECK ((last_tick IS NULL) = (last_fired_at IS NULL))
);

-- The firing pass: schedules due now, soonest first.
CREATE INDEX schedules_due_idx ON schedules (next_fire_at) WHERE NOT paused;

-- A job fired by a schedule records which one, and the tick it was fired for.
ALTER TABLE jobs ADD COLUMN schedule_name text, ADD COLUMN schedule_tick timestamptz;
