"""``agent-service``: the command-line client of the service's public HTTP API.

It lists agents, invokes one and prints the answer as it streams, follows (``tail``), polls and
cancels tasks. Like any other client it knows only the HTTP API: it imports nothing of the
service's own packages (an import-linter contract checks it), so it works against any
deployment it can reach with a key.
"""
