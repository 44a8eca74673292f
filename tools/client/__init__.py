"""keybound.tools.client.

The CPython client application (state kept across runs, one request through the ACE
flow).
"""
