"""Moving events: from a source's page to every output and back to a committed cursor.

``app`` (assembles sources, outputs, runners from a Config), ``pipeline`` (SourceRunner: one
source's pages, the commit rule), ``polls`` (a poll's state, where its cursor stands in time),
``fetch`` (reading pages ahead, bounded), ``prepare`` (normalize, validate, transform),
``delivery`` (OutputRunner: send, retry, dead-letter), ``diskbuffer`` (the optional durable buffer
of one output), ``pollpool`` (a bounded pool for many sources), ``workers``/``workerpool``/
``pagework`` (per-event CPU work in worker processes), ``interpreter`` (GC and switch settings),
``noprogress`` (a poll that repeats a cursor or a page is stopped), ``stores`` (SQLite in the state
directory, or PostgreSQL for a fleet) and ``fleet`` (this instance's leases).

Imports: config, storage, plugin, net and the top-level helpers; never commands.
"""
