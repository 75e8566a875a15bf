"""Built-in sources: one module or package per vendor API, and the window cursor they share."""
