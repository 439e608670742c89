"""The search service: ranked full-text search over a knowledge base and chat history.

- :mod:`services.search.query` parses user queries into safe FTS5 expressions.
- :mod:`services.search.index` is the SQLite FTS5 index (documents, messages, paging).
- :mod:`services.search.kb` reads knowledge-base files.
- :mod:`services.search.web` fetches optional web results (a MediaWiki search API).
- :mod:`services.search.service` wires it to the bus (``/search``, ``/find``).
"""
