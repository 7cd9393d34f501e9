"""Registered git repositories: names and URLs (`validation`), git run as the user (`git`),
and the lifecycle of register, pull and remove (`service`)."""
