"""keybound.tools.http.

HTTP bindings for DPoP-bound tokens (ASGI middleware, httpx auth, replay cache).
"""
