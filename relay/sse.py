"""Server-sent events: the one incremental parser every upstream stream is read through.

:meth:`SSEParser.blocks` frames the bytes into complete events, left raw (the OpenAI
pass-through forwards them as they came); :meth:`SSEParser.feed` also reads their fields (the
translators want the ``event:`` name and the ``data:`` payload).
"""

from __future__ import annotations


class SSEParser:
    """Incremental server-sent-events parser: bytes in, events out.

    An event ends at a blank line. ``\\r\\n`` and bare ``\\r`` line ends are accepted and
    become ``\\n`` (a ``\\r`` at the end of one read is held back in case the ``\\n`` is in the
    next), so where the reads are split never changes what comes out. In the fields, comments
    (``:`` lines), ``id:`` and ``retry:`` are ignored, and an event without data is not
    dispatched, as the SSE spec says.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def blocks(self, data: bytes) -> list[bytes]:
        """The events ``data`` completes, each its raw lines without the blank line that ended
        it. Runs of blank lines give empty blocks, which the caller skips."""
        buf = self._buf + data
        if b"\r" in buf:
            tail = b""
            if buf.endswith(b"\r"):
                buf, tail = buf[:-1], b"\r"
            blocks = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n\n")
            self._buf = blocks.pop() + tail
            return blocks
        # Split without first asking whether there is a blank line: on the hot path (an
        # OpenAI stream passed through) a read nearly always completes an event, and the
        # search for it would scan the read twice.
        blocks = buf.split(b"\n\n")
        self._buf = blocks.pop()
        return blocks

    def rest(self) -> bytes:
        """At end of stream: what followed the last complete event (and forget it)."""
        rest, self._buf = self._buf, b""
        return rest

    def feed(self, data: bytes) -> list[tuple[str, bytes]]:
        """``(event, data)`` for each event ``data`` completes: ``event`` is the ``event:``
        field or ``""``; ``data`` the payload, multi-line ``data:`` fields joined by ``\\n``."""
        blocks = self.blocks(data)
        return self._parse_blocks(blocks) if blocks else []

    def flush(self) -> list[tuple[str, bytes]]:
        """At end of stream: dispatch a last event that lacked its blank line (lenient)."""
        buf = self.rest().rstrip(b"\r\n")
        return self._parse_blocks([buf]) if buf else []

    @staticmethod
    def _parse_blocks(blocks: list[bytes]) -> list[tuple[str, bytes]]:
        out: list[tuple[str, bytes]] = []
        for block in blocks:
            if not block:
                continue
            if block.startswith(b"data: ") and b"\n" not in block:  # the common case
                out.append(("", block[6:]))
                continue
            event = ""
            lines: list[bytes] = []
            for line in block.split(b"\n"):
                if not line or line[0] == 0x3A:  # blank or ":" comment
                    continue
                name, _, value = line.partition(b":")
                if value[:1] == b" ":
                    value = value[1:]
                if name == b"data":
                    lines.append(value)
                elif name == b"event":
                    event = value.decode("utf-8", "replace")
            if lines:
                out.append((event, lines[0] if len(lines) == 1 else b"\n".join(lines)))
        return out
