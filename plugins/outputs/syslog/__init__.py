"""Syslog CEF (``syslog_cef``): the transport (UDP, TCP, TLS; framing), the syslog header and the CEF encoding."""
