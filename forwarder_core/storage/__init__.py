"""What the forwarder keeps between runs: the state directory and everything in it.

``statedir`` (created 0700, ours alone, locked), ``nofollow`` (every file below it opened without
following a symlink), ``checkpoint`` (SQLite cursors, poll records and ledger totals),
``ledger`` (read = delivered + set aside + ..., checked per page), ``durable`` (appends that survive
a crash mid-line), ``setaside`` (quarantine and dead-letter writers), ``setaside_files`` (reading
them back); for a fleet, ``pg`` (the PostgreSQL connection and schema), ``pgstore`` (checkpoints and set-aside records,
commits fenced by the lease) and ``leases``.

Imports: the packages below it in the order (plugin, net) and the top-level helpers (today it needs
only the helpers); never config, engine or commands.
"""
