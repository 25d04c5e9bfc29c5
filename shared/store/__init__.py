"""Where state lives: the Firestore client, user-scoped documents (`documents`: a document that
is not the caller's is a 404), Pub/Sub publishing and the messages its topics carry.

May import: `shared.core`.
"""
