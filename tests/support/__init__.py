"""The one place for test helpers: payload builders, outbox readers, waiting.

- :mod:`tests.support.builders`: inbound payloads as the gateway publishes them;
- :mod:`tests.support.outbox`: what a service stored (actions, dead letters);
- :mod:`tests.support.waiting`: :func:`eventually`, waiting on a condition with a timeout.
"""
