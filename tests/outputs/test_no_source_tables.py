"""The outputs know no source by name: everything they need comes from the event's source block."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

OUTPUTS = Path(__file__).resolve().parents[2] / "plugins" / "outputs"
BUILT_IN_SOURCE_TYPES = ("incydr", "agilicus", "pangea", "asana")


@pytest.mark.parametrize("module", sorted(OUTPUTS.rglob("*.py")), ids=lambda p: str(p.relative_to(OUTPUTS)))
def test_no_output_module_names_a_built_in_source_type(module: Path) -> None:
    text = module.read_text(encoding="utf-8")
    found = [(n + 1, line.strip()) for n, line in enumerate(text.splitlines())
             if re.search("|".join(BUILT_IN_SOURCE_TYPES), line, re.IGNORECASE)]
    assert not found, f"{module}: a built-in source type named at {found}"
