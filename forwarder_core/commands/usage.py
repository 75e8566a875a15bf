"""What each command says of itself: its line in the command list, and the description its
``--help`` and the man page show (one table, so the two never disagree)."""
from __future__ import annotations

COMMANDS: dict[str, tuple[str, str]] = {
    # name: (one line for the command list, the description its --help and the man page show)
    "run": ("the daemon: poll every source on its interval, forever",
            "Poll every source on its interval, forever, and deliver each event to the outputs it is routed "
            "to; a source's checkpoint moves only once every output accepted its events. SIGTERM or SIGINT "
            "finishes the batches in flight, saves the checkpoints and exits 0; SIGHUP reloads the config "
            "(a config that does not pass check is refused and the running one kept)."),
    "once": ("poll each source until caught up, deliver, checkpoint, exit",
             "Poll each source (or the ones named with --source) until it has caught up, deliver, save the "
             "checkpoints and exit: 0 when everything read was delivered or set aside (quarantined, "
             "dead-lettered), 1 when a source or an output failed, with a summary of what failed. Progress is "
             "a bar on a terminal and plain lines otherwise; the summary counts each source's events."),
    "check": ("validate the config and every plugin's options",
              "Validate the config and every source's and output's options; exit 0 when valid, 78 otherwise "
              "with one line per problem (FILE:LINE: $.json.path: message). With --connect, also authenticate "
              "to each source and reach each output, without forwarding anything."),
    "plugins": ("list installed source and output types",
                "List the source and output types that are installed, with the distribution and version each "
                "comes from, and any plugin that failed to load."),
    "state": ("show checkpoints and lag, or reset one source",
              "Show each source's checkpoint: its watermark (the time up to which it has read everything), "
              "the lag behind now, the newest event delivered and when, the events delivered, the last poll's "
              "outcome, and each source's ledger (with a cluster: block, also its owner and lease). Reset "
              "forgets one source's checkpoint, so its next poll starts again from its start_time (stop the "
              "service first). Import copies a single host's checkpoints into a fleet's PostgreSQL, never "
              "moving a cursor backwards. Show reads only: no secret is needed, and a config that never ran "
              "creates nothing."),
    "cluster": ("list the instances of a fleet (the config's cluster: block)",
                "List the instances sharing this config through PostgreSQL: name, version, last heartbeat, "
                "sources held and a hash of the config each runs, with a warning when live instances run "
                "different configs. Joins nothing and takes no lease."),
    "quarantine": ("list events set aside (quarantine, dead letters), or replay them once the cause is fixed",
                   "List the events set aside in the state directory, grouped by reason: the quarantine (events "
                   "that failed validation, per source) and the dead letters (events an output refused for good, "
                   "per output). Replay sends them again once the cause is fixed: quarantined events go through "
                   "validation and every output their source is routed to, dead letters back to their output. "
                   "What is delivered leaves its file; what fails again stays, with its new reason. Stop the "
                   "service before replaying."),
    "cef-check": ("check that each line of a sample is strict CEF (as syslog_cef sends it)",
                  "Check that each line of the given files (or standard input) is one strict CEF message."),
}
