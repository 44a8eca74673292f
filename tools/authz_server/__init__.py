"""keybound.tools.authz_server.

The desktop Authorization Server (storage, schema, provisioning, HTTP front, server).
"""
