"""Cloud Functions: one module per REST resource (plus the Pub/Sub-triggered ones).

Each module exposes its entry point (named like the function in `infra/resources.yaml`) and,
for HTTP functions, the `router` that serves it. Handlers are thin: parse, authorize, call
`shared/`, shape the reply.
"""
