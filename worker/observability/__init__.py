"""What an operator sees of a worker: structured log lines, and failures sent to Sentry."""
