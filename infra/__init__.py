"""Deployment and the local stack: emulators, the one-port gateway, the deploy plan."""
