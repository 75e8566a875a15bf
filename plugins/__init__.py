"""Built-in source and output plugins, registered through the ``siem_forwarder`` entry-point group."""
