"""The library every Mnemo deployable imports, in layers (docs/architecture.md, "Layers").

    core        settings, logging, errors, base models, the lazy-client helper
    providers   outside services: the language model, speech-to-text, audio decoding
    store       Firestore and Pub/Sub: the clients, user-scoped documents, topic messages
    auth        who is calling: Firebase ID tokens
    web         the REST router, the OpenAPI document, idempotency
    resources   users, waitlist, conversations, memories, action items, chats
    pipeline    what happens to a finished conversation: processing, the sweep
    chat        the agent: its loop, specialists, tools, history and the chat API

A layer imports only the layers above it in this list (`providers` only `core`; `pipeline` and
`chat` not each other); nothing here imports `functions/`, `realtime/` or `infra/`.
`tests/shared/test_layers.py` holds the rule. No web framework lives here, and nothing heavy
happens at import time: clients are built on first use.
"""
