"""A job's workspace seen from the server: opened beneath it and never outside (`safe`),
listed, read and downloaded (`service`), and diffed within bounds (`diffs`, each diff in a
process of its own: `diffproc`)."""
