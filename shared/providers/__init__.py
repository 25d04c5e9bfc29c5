"""Outside services behind small interfaces: the language model and embeddings (`llm`, the
`openai` SDK), live speech-to-text (`stt`, the interface; `deepgram`, its adapter over
`deepgram-sdk`) and audio decoding (`audio`). Later Google, Plaid and speech synthesis live here
too, each in its own module, so that a deployable's secrets can be read off which providers it
imports.

May import: `shared.core` only.
"""
