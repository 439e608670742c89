"""End-to-end tests: sandbox, real gateway, real services, real nats-server."""
