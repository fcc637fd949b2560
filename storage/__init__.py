"""What the service keeps beyond a task's life: conversation sessions, the audit log and its
cold-storage archive (SQL, through SQLAlchemy's asyncio API), and the token revocation list
(Redis). Framework-free: the web app and the worker both use it; it imports neither."""
