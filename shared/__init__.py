"""The library every Mnemo deployable imports: settings, auth, Firestore, Pub/Sub, models, errors.

No web framework lives here. Nothing heavy happens at import time: clients are built on first use.
"""
