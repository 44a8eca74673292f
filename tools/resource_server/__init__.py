"""keybound.tools.resource_server.

The RS daemon (configuration, state, demo resources, systemd unit).
"""
