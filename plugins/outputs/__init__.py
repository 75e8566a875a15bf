"""Built-in outputs: one module or package per SIEM protocol, and the batching the HTTP ones share."""
