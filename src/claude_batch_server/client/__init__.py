"""`claude-batch`: the command-line client. It speaks only the public HTTP API."""
