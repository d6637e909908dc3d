-- How many times a job was given back unfinished and uncharged (a worker shutting down, a worker
-- function's invocation ending). Past a bound the worker charges the attempt instead, so a job that
-- can never finish inside one invocation does not go round forever.
ALTER TABLE jobs ADD COLUMN releases integer NOT NULL DEFAULT 0;
