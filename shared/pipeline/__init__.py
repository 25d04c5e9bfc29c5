"""What happens to a conversation after it finishes, off the request path: post-processing
(title, summary, action items, memories) and the sweep that finishes idle conversations and
requeues stuck ones. App webhooks land here too.

May import: every layer but `shared.chat`.
"""
