"""APNs over HTTP/2: notification model, payloads, provider tokens, responses and the client.

This package knows nothing of chat, Azure or users, and imports nothing else from ``shared``.
"""
