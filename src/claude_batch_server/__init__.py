"""Claude Batch Server: Claude Code jobs run as their OS users, behind a REST API."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("claude-batch-server")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
