"""keybound.tools.tokens.

Tokens for a person at a shell: what ``keybound token inspect`` shows
(:mod:`.inspection`), test tokens from a claims file (:mod:`.mint`), and a call to an
HTTP API with a DPoP-bound token (:mod:`.http_call`).
"""
