"""The API's resources, one module each: users, waitlist, conversations (and the conversation
lifecycle), memories, action items and chat messages: their models, and the Firestore reads and
writes behind their routes.

May import: `shared.core`, `shared.providers`, `shared.store`, `shared.auth`, `shared.web`.
"""
