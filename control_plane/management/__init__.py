"""The management MCP server at ``/mcp``: every admin operation as an MCP tool, on the same
service layer as the CLI and the web UI (there is one implementation of each operation and of
its permission check: the service's). This package only translates: MCP arguments in, service
call, structured result out."""
