"""The Cloud Run service for long-lived connections: WebSockets and server-sent events."""
