"""``python -m forwarder_core``: the same as the ``siem-forwarder`` command."""
from forwarder_core.commands.cli import main

raise SystemExit(main())
