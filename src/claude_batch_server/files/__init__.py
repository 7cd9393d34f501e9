"""A job's workspace seen from the server: opened beneath it and never outside (`safe`)."""
