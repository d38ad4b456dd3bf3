"""The data plane: mitmproxy addons that route, authenticate, parse, authorize, inject and
record every MCP call, deciding only from in-memory snapshots. It never touches the database."""
