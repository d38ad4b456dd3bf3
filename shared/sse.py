"""Server-sent events, as MCP's Streamable HTTP uses them: cut a byte stream into whole events and
write them back, field for field, so an intermediary can rewrite ``data`` and keep the rest
(ids for ``Last-Event-ID`` resumption, event names, retry hints, comments) as it was.

``EventSplitter`` reads a stream chunk by chunk, as it arrives: it scans each byte once (a
chunk is searched for the blank line that ends an event, never the whole pending event again)
and holds at most ``max_event`` bytes of an event that has not ended. It reads the stream as a
browser's ``EventSource`` does (WHATWG HTML, "Server-sent events"): lines end in CRLF, LF or CR,
a leading byte order mark is skipped, and an event the stream ends in the middle of is dropped,
never passed on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_BOM = b"\xef\xbb\xbf"


class EventTooLarge(ValueError):
    """An event grew past the splitter's limit before it ended."""


@dataclass(slots=True)
class Event:
    lines: list[tuple[str, str]] = field(default_factory=list)  # (field name, value); "" for a comment

    @property
    def data(self) -> str | None:
        parts = [value for name, value in self.lines if name == "data"]
        return "\n".join(parts) if parts else None

    def with_data(self, data: str) -> "Event":
        """The same event with its data replaced (one ``data:`` line per line of ``data``)."""
        out, placed = [], False
        for name, value in self.lines:
            if name != "data":
                out.append((name, value))
            elif not placed:
                out.extend(("data", line) for line in data.split("\n"))
                placed = True
        return Event(out)

    def encode(self) -> bytes:
        text = "".join(f":{value}\n" if name == "" else f"{name}: {value}\n" for name, value in self.lines)
        return (text + "\n").encode()


def parse_event(block: bytes) -> Event:
    """One event's lines (LF-separated, without the blank line that ended it)."""
    event = Event()
    for line in block.decode("utf-8", errors="replace").split("\n"):
        if line.startswith(":"):
            event.lines.append(("", line[1:]))
            continue
        name, _, value = line.partition(":")
        event.lines.append((name, value[1:] if value.startswith(" ") else value))
    return event


class EventSplitter:
    def __init__(self, max_event: int) -> None:
        self.max_event = max_event
        self._pending = bytearray()  # the stream since the last whole event, line ends made LF
        self._held_cr = False  # a CR ending the last chunk: half of a CRLF, or a line end of its own
        self._started = False

    def feed(self, chunk: bytes) -> list[Event]:
        """The events that ``chunk`` completes. Raises ``EventTooLarge`` when the event still
        pending has grown past ``max_event``."""
        if not self._started:
            self._started = True
            if chunk.startswith(_BOM):
                chunk = chunk[len(_BOM):]
        if self._held_cr:
            chunk = b"\r" + chunk
        self._held_cr = chunk.endswith(b"\r")
        if self._held_cr:
            chunk = chunk[:-1]
        searched = max(len(self._pending) - 1, 0)  # the last pending byte may pair with a new LF
        self._pending += chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        events = []
        start = 0
        while (end := self._pending.find(b"\n\n", max(start, searched))) >= 0:
            block = bytes(self._pending[start:end]).lstrip(b"\n")  # blank lines dispatch nothing
            if block:
                events.append(parse_event(block))
            start = end + 2
        del self._pending[:start]
        if len(self._pending) > self.max_event:
            raise EventTooLarge(f"an event grew past {self.max_event} bytes without ending")
        return events

    def close(self) -> None:
        """The stream ended: what was not a whole event is dropped, as ``EventSource`` does."""
        self._pending.clear()
        self._held_cr = False
