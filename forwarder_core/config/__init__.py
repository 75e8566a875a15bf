"""The config file: YAML with line origins, ``${VAR}``, merging, schemas and the problems they find.

``loader`` (Config, load_config: the whole document, conf.d merged), ``yamlsource`` (YAML with the
line of each value), ``components`` (each source/output block against its plugin's schema),
``problems`` (every problem at once, with file, line and JSON path), ``schema`` (compiled JSON
Schemas for config, options and events), ``typedvars`` (a whole-scalar ``${VAR}`` takes its
schema's type), ``cluster`` (the fleet's block and its DSN).

Imports: :mod:`forwarder_core.storage` (whether the state directory is usable is a config problem),
:mod:`forwarder_core.plugin` (option schemas, ComponentConfig), :mod:`forwarder_core.net` and the
top-level helpers; never engine or commands.
"""
