"""The ground floor: settings, structured logging, API errors, the base pydantic models and the
one lazily built client helper.

May import: nothing of Mnemo's (only the standard library and pydantic).
"""
