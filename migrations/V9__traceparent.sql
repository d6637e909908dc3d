-- The W3C trace context (`traceparent` header) of the request that created the job, so that the
-- worker's spans continue the creator's trace. Nullable without a default: adding it rewrites nothing.
ALTER TABLE jobs ADD COLUMN traceparent text;
