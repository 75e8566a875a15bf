"""What plugins meet: the base classes, what they are given and hand back, and how they are loaded.

``base`` (Source, Output), ``context`` (ComponentConfig, Context), ``results`` (Page, PageBody,
SendResult), ``encoded`` (pre-encoded batches), ``source_traits`` (what a source declares for the
outputs), ``option_schemas``, ``cef`` (the strict CEF parser), ``hookspecs`` and ``hooks`` (every
hook, and one typed method per hook), ``registry`` (types by name, and building an instance), ``manager`` (the one-door entry-point loader)
and ``watch`` (plugin calls in flight, so one that hangs is named).

Imports: :mod:`forwarder_core.net` (a Context lends an HTTP client) and the top-level helpers;
never config, storage, engine or commands. Plugin authors import none of this directly: they use
:mod:`forwarder_core.plugin_api`, which re-exports what they need.
"""
