"""Server-sent events, as MCP's Streamable HTTP uses them: parse a buffer into whole events and
write them back, field for field, so an intermediary can rewrite ``data`` and keep the rest
(ids for ``Last-Event-ID`` resumption, event names, retry hints, comments) as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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


def split_events(buffer: bytes) -> tuple[list[Event], bytes]:
    """The complete events at the start of ``buffer`` and the incomplete rest.

    A trailing ``\r`` is held back: it may be the first half of a ``\r\n`` split across two
    network chunks, and read alone it would end a line that has not ended."""
    held = b""
    if buffer.endswith(b"\r"):
        buffer, held = buffer[:-1], b"\r"
    normalized = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    events: list[Event] = []
    while True:
        end = normalized.find(b"\n\n")
        if end < 0:
            return events, normalized + held
        block, normalized = normalized[:end], normalized[end + 2:]
        event = Event()
        for line in block.decode("utf-8", errors="replace").split("\n"):
            if line.startswith(":"):
                event.lines.append(("", line[1:]))
                continue
            name, _, value = line.partition(":")
            event.lines.append((name, value[1:] if value.startswith(" ") else value))
        if event.lines:
            events.append(event)
