"""A run's output read line by line, never held whole: what every executor streams, from
whatever pipe its run's output comes through."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

READ_LIMIT = 1024 * 1024  # an asyncio line buffer; longer lines arrive in pieces
MAX_LINE = 8 * 1024 * 1024  # bytes of one output line kept; the rest is read and dropped


@dataclass(frozen=True)
class Line:
    data: bytes  # at most MAX_LINE bytes: the line with its newline, unless cut or last
    dropped: int = 0  # bytes cut off its end


async def read_lines(stream: asyncio.StreamReader, limit: int = MAX_LINE) -> AsyncIterator[Line]:
    """Lines of `stream`; one longer than `limit` is cut to its first `limit` bytes, the
    rest read and dropped, so no line is ever held whole."""
    while True:
        try:
            line = await stream.readuntil(b"\n")
        except asyncio.IncompleteReadError as end:
            if end.partial:
                yield Line(end.partial)
            return
        except asyncio.LimitOverrunError as overrun:
            yield await _long_line(stream, overrun.consumed, limit)
            continue
        yield Line(line)


async def _long_line(stream: asyncio.StreamReader, consumed: int, limit: int) -> Line:
    """The rest of a line longer than the buffer, `consumed` bytes of it buffered so far."""
    kept, dropped = bytearray(), 0
    while True:
        piece = await stream.readexactly(consumed)  # buffered already, without the newline
        try:
            piece += await stream.readuntil(b"\n")
            ended = True
        except asyncio.LimitOverrunError as overrun:
            consumed, ended = overrun.consumed, False
        except asyncio.IncompleteReadError as end:
            piece, ended = piece + end.partial, True
        room = max(limit - len(kept), 0)
        kept += piece[:room]
        dropped += max(len(piece) - room, 0)
        if ended:
            return Line(bytes(kept), dropped)


async def pipe_reader(fd: int) -> asyncio.StreamReader:
    """A stream over the reading end `fd` of a pipe, which it then owns."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=READ_LIMIT)
    pipe = os.fdopen(fd, "rb", buffering=0)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    return reader
