"""Agilicus audits (``agilicus``) and auth audits (``agilicus_auth``): the sources and their cursor."""
