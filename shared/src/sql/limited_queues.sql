-- limited_queues: the queues with a concurrency limit.
SELECT queue FROM queue_settings WHERE concurrency IS NOT NULL
