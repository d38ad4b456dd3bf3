"""Closed-loop load: ``wrk`` (C, one epoll thread) keeps N keep-alive connections busy with the
echo call for a fixed time, each sending its next request as soon as the answer arrives.

wrk costs ~20 µs of CPU per call, a few percent of what the processes under test spend, so it
is never the bottleneck. A Lua ``done`` hook writes the totals and the latency quantiles at every
0.1 percent as JSON (Debian's wrk 4.1 exposes no raw histogram to Lua); each quantile then stands
for 1/1000 of the round's requests, so interleaved rounds merge before percentiles are taken.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.latency import Histogram
from bench.mcp_request import echo_body, echo_headers

WRK_TIMEOUT = "5s"
QUANTILES = 1000

LUA_DONE = """
done = function(summary, latency, requests)
  local out = io.open([==[{out}]==], "w")
  local e = summary.errors
  out:write(string.format('{{"requests":%d,"duration_us":%d,"errors":{{"connect":%d,"read":%d,"write":%d,'
    .. '"status":%d,"timeout":%d}},"latency":[', summary.requests, summary.duration, e.connect, e.read,
    e.write, e.status, e.timeout))
  for i = 1, QUANTILES do
    out:write((i > 1 and "," or "") .. string.format("%d", latency:percentile(i * 100 / QUANTILES)))
  end
  out:write("]}}")
  out:close()
end
"""


@dataclass
class WrkResult:
    requests: int
    seconds: float
    failures: int  # non-2xx answers and socket errors
    latency: Histogram
    client_cpu: float  # wrk's own CPU seconds: the evidence that it was not the bottleneck


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def lua_script(out: Path, api_key: str | None) -> str:
    lines = ['wrk.method = "POST"', f"wrk.body = [==[{echo_body().decode()}]==]"]
    lines += [f'wrk.headers["{name}"] = [==[{value}]==]' for name, value in echo_headers(api_key).items()]
    return "\n".join(lines) + LUA_DONE.format(out=out).replace("QUANTILES", str(QUANTILES))


def run_wrk(url: str, concurrency: int, seconds: int, api_key: str | None = None,
            cpus: set[int] | None = None) -> WrkResult:
    with tempfile.TemporaryDirectory(prefix="mesh-bench-wrk-") as tmp:
        out = Path(tmp) / "result.json"
        script = Path(tmp) / "echo.lua"
        script.write_text(lua_script(out, api_key))
        argv = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", f"--timeout={WRK_TIMEOUT}", "-s", str(script), url]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(argv, check=True, capture_output=True, timeout=seconds + 30,
                       preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        client_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        doc = json.loads(out.read_text())
    errors = doc["errors"]
    failures = errors["status"] + errors["connect"] + errors["read"] + errors["write"] + errors["timeout"]
    latency = Histogram()
    if doc["requests"]:
        weight = doc["requests"] / len(doc["latency"])
        for micros in doc["latency"]:
            latency.add(micros, weight)
    return WrkResult(requests=doc["requests"], seconds=doc["duration_us"] / 1e6, failures=failures, latency=latency,
                     client_cpu=client_cpu)
