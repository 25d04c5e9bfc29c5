"""Who is calling: Firebase ID tokens verified and the caller attached (`tokens`), one
implementation for REST and WebSockets; the API keys' format, checksum and stored hash (`keys`).

May import: `shared.core`, `shared.store`.
"""
