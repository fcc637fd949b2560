"""``python -m cli``: the same as the ``agent-service`` command."""

from cli.main import main

main()
