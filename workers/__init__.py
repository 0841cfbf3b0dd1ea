"""RQ on Redis: queues, job wrappers, the evidence store and reporting back to the channel."""
