-- limited_queues: the queues with a concurrency or rate limit.
SELECT queue FROM queue_settings WHERE concurrency IS NOT NULL OR rate_limit IS NOT NULL
