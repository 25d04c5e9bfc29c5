"""Who is calling: Firebase ID tokens verified and the caller attached (`tokens`), one
implementation for REST and WebSockets. API keys land here too.

May import: `shared.core`, `shared.store`.
"""
