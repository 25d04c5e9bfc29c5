"""The REST surface's rules, for the functions and the realtime service alike: the router
(matching, authentication, validation, errors), the OpenAPI document built from its routes, and
idempotent POSTs. CORS and rate limits land here too.

May import: `shared.core`, `shared.store`, `shared.auth`.
"""
