"""The benchmark harness (issue #3): what the gateway costs per call, measured in one run side
by side with its baselines (the upstream directly, the same lean mitmproxy without our addons,
and plain ``mitmdump``). Run it with ``make bench`` or ``.venv/bin/python -m bench``.

Nothing here is imported by the gateway; the harness only starts it, drives it and reads
``/proc`` for its CPU time and memory."""
