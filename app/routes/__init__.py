"""One router per resource: agents (list, submit), tasks (status), health."""
