"""The chat agent: the loop over the model's streamed answer, one module per specialist, the
tools they call, the chat's history cache, and the `/v2/messages` declaration.

May import: every layer but `shared.pipeline`.
"""
