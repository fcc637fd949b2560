"""Developer and test-suite helper scripts, runnable with ``python -m scripts.<name>``."""
