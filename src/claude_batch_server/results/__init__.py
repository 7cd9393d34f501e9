"""Results that leave the server: a job's changes as a commit (pushed as a branch, or
served as a patch), and signed webhooks for its end, from a durable outbox with retries."""
