"""The ``source`` block a built-in source class puts in its events, for output tests that build events by hand."""
from __future__ import annotations

from typing import Any

from siem_forwarder_plugins.sources.agilicus.source import AgilicusAudits, AgilicusAuthAudits
from siem_forwarder_plugins.sources.asana import AsanaSource
from siem_forwarder_plugins.sources.incydr import IncydrSource
from siem_forwarder_plugins.sources.pangea.source import PangeaSource

BUILTIN = {cls.type_name: cls for cls in (AgilicusAudits, AgilicusAuthAudits, AsanaSource, IncydrSource, PangeaSource)}


def source_block(source_type: str, name: str = "src", vendor: str = "V", product: str = "P") -> dict[str, Any]:
    """``{"name","type","vendor","product"}`` plus what the built-in class of that type declares (none otherwise)."""
    declared = BUILTIN[source_type].traits.block() if source_type in BUILTIN else {}
    return {"name": name, "type": source_type, "vendor": vendor, "product": product, **declared}
