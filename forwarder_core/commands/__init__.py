"""What an operator runs: the command line and everything the daemon shows the world.

``cli`` (argument parsing, one function per command), ``daemon`` (``run``: schedule, signals,
reload), ``systemd`` (notify, watchdog), ``health`` (``/health`` and ``/metrics``), ``progress``
(``once``'s progress and summary), ``statecmd`` (``state``), ``replay`` (``quarantine``
list/replay), ``connect`` (``check --connect``),
``fleetcmd`` (``cluster``, a fleet's ``state`` and ``quarantine``), ``usage`` (what each command
says of itself) and ``manpage`` (the man page, made from the command line).

Imports: every other package; nothing imports it but :mod:`forwarder_core.__main__`.
"""
