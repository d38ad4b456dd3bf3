"""The control plane: users, organizations, members, connections and API keys in a database;
compiles each organization into a snapshot and publishes it to Redis. It is never in the path
of a proxied tool call."""
