"""The API routes, one module per area; thin: the work is in the services."""
