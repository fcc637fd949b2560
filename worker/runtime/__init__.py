"""Where a task's async work runs: the event loop (one per task, or one per worker process), the
clients bound to it, the monitor that reports a stalled loop, and the delivery of cancel
requests into a running task's cancel scope."""
