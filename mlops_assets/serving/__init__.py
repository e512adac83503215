"""Serving the champion outside batch: a real-time ASGI server and a streaming consumer."""
