"""gRPC servicers: thin. Validate, convert proto <-> domain, call the domain, nothing else.

Domain exceptions are mapped to status codes once, in ``llmopt.api.errors`` (an interceptor), so
servicers raise or let propagate; they never call ``context.abort`` themselves.
"""
