"""Elasticsearch (``elastic_bulk``): the ``_bulk`` protocol and the ECS mapping of normalized events."""
