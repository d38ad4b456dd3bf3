"""Where the data plane's time goes under load: ``py-spy`` samples the running process (no
restart, no instrumentation) while wrk drives it, and the collapsed stacks are summed two ways:

- by area (inclusive): our addons, mitmproxy's hook dispatch, its HTTP/1 layers, I/O, idle;
- by function (self time): the leaves where the samples landed.

Run when a target is missed (or with ``--profile``), so the report can say what to change.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

from bench.closed_loop import run_wrk
from bench.measure import Target

SAMPLE_RATE = 250
# A sample belongs to the first area any of its frames is in: a call from our addons into
# mitmproxy (e.g. setting ``request.host``) counts as our addons' time, and the dispatch that
# called our addon counts only for its own frames. py-spy names files relative to sys.path;
# ``dataplane_addon/__main__.py`` is the root of every stack, so it is no addon's.
ENTRY_POINT = "dataplane_addon/__main__.py"
AREAS = (
    ("our addons (dataplane_addon/, shared/)", ("dataplane_addon/", "(shared/")),
    ("mitmproxy hook dispatch (addonmanager)", ("mitmproxy/addonmanager.py", "mitmproxy/hooks.py")),
    ("mitmproxy HTTP/1 layers and events", ("mitmproxy/proxy/", "mitmproxy/http.py", "mitmproxy/net/", "h11/")),
    ("asyncio loop and sockets", ("asyncio/",)),
)


def py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return found if Path(found).exists() else None


def parse_collapsed(text: str) -> list[tuple[list[str], int]]:
    stacks = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def addon_module(frame: str) -> str | None:
    """``dataplane_addon/inject.py`` for a frame in it, None for any other frame."""
    start = frame.find("dataplane_addon/")
    if start < 0 or ENTRY_POINT in frame:
        return None
    return frame[start:].split(":", 1)[0]


def area_of(frames: list[str]) -> str:
    frames = [f for f in frames if ENTRY_POINT not in f]
    if not frames:
        return "other"
    leaf = frames[-1]
    if "select" in leaf and ("selectors.py" in leaf or "epoll" in leaf):
        return "idle (waiting in epoll)"
    for name, markers in AREAS:
        if any(marker in frame for frame in frames for marker in markers):
            return name
    return "other"


def summarise(stacks: list[tuple[list[str], int]], top: int = 12) -> dict:
    total = sum(count for _, count in stacks) or 1
    areas: Counter[str] = Counter()
    modules: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for frames, count in stacks:
        areas[area_of(frames)] += count
        for module in {m for m in map(addon_module, frames) if m}:
            modules[module] += count
        leaves[frames[-1]] += count
    return {
        "samples": total,
        "by_area": {name: round(count / total, 3) for name, count in areas.most_common()},
        "by_addon_module": {name: round(count / total, 3) for name, count in modules.most_common()},
        "top_self": [{"frame": frame, "share": round(count / total, 3)} for frame, count in leaves.most_common(top)],
    }


def profile_under_load(pid: int, target: Target, seconds: int, concurrency: int,
                       load_cpus: set[int] | None) -> dict:
    spy = py_spy()
    if spy is None:
        return {"error": "py-spy is not installed (it comes with the `bench` extra)"}
    with tempfile.TemporaryDirectory(prefix="mesh-bench-pyspy-") as tmp:
        out = Path(tmp) / "stacks.txt"
        load = threading.Thread(target=run_wrk, args=(target.url, concurrency, seconds + 2, target.api_key, load_cpus),
                                daemon=True)
        load.start()
        try:
            argv = [spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", str(SAMPLE_RATE),
                    "--format", "raw", "--nonblocking", "--output", str(out)]
            done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=seconds + 30)
        finally:
            load.join(seconds + 40)
        if done.returncode != 0 or not out.exists():
            return {"error": f"py-spy failed: {done.stderr.strip()[-300:]}"}
        return {"target": target.name, "concurrency": concurrency, "seconds": seconds,
                **summarise(parse_collapsed(out.read_text()))}
