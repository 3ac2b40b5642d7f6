"""Settings: frozen, typed, validated once at start-up and passed explicitly.

The shape mirrors the TOML file of ARCHITECTURE.md. msgspec does the type checking, so a wrong
type or an unknown key fails with the key's path instead of surfacing later as a mysterious
error deep in the code. `env:NAME` strings are resolved from the environment before checking,
and `SMSGW_<SECTION>_<KEY>` variables override scalar keys of the single-table sections.
"""

from smsgw.settings import providers, sections
from smsgw.settings.document import Settings
from smsgw.settings.loader import document_type, load_settings, parse_settings
from smsgw.settings.providers import *  # noqa: F403  (its __all__, listed once there)
from smsgw.settings.schema import config_schema
from smsgw.settings.sections import *  # noqa: F403  (its __all__, listed once there)

__all__ = ["Settings", "config_schema", "document_type", "load_settings", "parse_settings"]
__all__ += providers.__all__
__all__ += sections.__all__
