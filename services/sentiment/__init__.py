"""The sentiment service: how a conversation feels, in English and Spanish.

Pure logic lives in small modules usable without a bus: :mod:`.language`
(which language a message is in), :mod:`.scoring` (VADER for English, the
SentiLeak lexicon with VADER-like rules for Spanish), :mod:`.aggregate`
(rolling per-chat and per-user mood documents, no message text),
:mod:`.chart` (the mood chart PNG and its one-line summary) and
:mod:`.evaluation` (the labelled sets and their metrics). The KV side:
:mod:`.store` (one document per instance slot, merged when read) and
:mod:`.batching` (at most one write per document in flight);
:mod:`.service` holds the commands and handlers.
"""
