"""JSON Schemas shipped with siem-forwarder: the config, the normalized event, each vendor raw event."""
