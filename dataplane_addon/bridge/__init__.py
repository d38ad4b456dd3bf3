"""The bridge: upstreams that do not speak Streamable HTTP (stdio commands, legacy HTTP+SSE
servers) made reachable as Streamable HTTP on loopback, so the data plane routes to them like to
any other upstream. ``python -m dataplane_addon.bridge`` runs it; ``mesh up`` supervises it.

This package's ``__init__`` imports nothing: the data plane imports ``bridge.address`` without
pulling in the SDK server machinery the bridge process needs.
"""
