"""A fake Anthropic Messages API for running the real Claude Code CLI in tests.

Start it with ``FakeAnthropic().start()`` (or as a context manager / the
``fake_anthropic`` fixture of :mod:`.fixtures`), point the CLI at ``fake.url`` with
``ANTHROPIC_BASE_URL``, pick a script per job with a ``[script:NAME]`` marker in the
prompt, and read what the model received from ``fake.requests`` /
``fake.conversation(NAME)``. See ``docs/claude-code-notes.md``.
"""

from .records import RecordedRequest, RequestContext
from .script import (
    BUILTIN_SCRIPTS,
    DEFAULT_TEXT,
    ApiError,
    Hang,
    Reply,
    Text,
    Thinking,
    ToolUse,
    Usage,
    bash,
    error,
    long_think,
    overloaded,
    read_file,
    text,
    tool,
    write_file,
)
from .server import FakeAnthropic, marker

__all__ = [
    "BUILTIN_SCRIPTS",
    "DEFAULT_TEXT",
    "ApiError",
    "FakeAnthropic",
    "Hang",
    "RecordedRequest",
    "Reply",
    "RequestContext",
    "Text",
    "Thinking",
    "ToolUse",
    "Usage",
    "bash",
    "error",
    "long_think",
    "marker",
    "overloaded",
    "read_file",
    "text",
    "tool",
    "write_file",
]
