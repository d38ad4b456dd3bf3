"""What both planes import: JSON-RPC parsing, the snapshot model, API-key hashing and the
names and formats of everything that crosses Redis. Nothing here imports Flask or mitmproxy."""
