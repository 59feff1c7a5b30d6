"""The integrations file: which directories to sync, how, and when.

One YAML file (default ``data/integrations.yaml``, or the path in ``ENTRA_PIPELINE_CONFIG``) lists
the integrations; each is one Dagster partition. ``load_integrations`` validates it whole: any
problem is one line naming the file, the integration and the field, and nothing runs.
``load_for_dagster`` sets a broken integration apart so the others still load.

- ``common``: the strict model base, ConfigError, how values are shown, URL and path checks
- ``entra``, ``workday``: each source type's source model and the names of its imported fields
- ``rules``: the mapping and the exclusion rules; ``lists``: distribution lists and the bulk file
- ``models``: an integration (Entra ID or Workday) and the file
- ``loader``: YAML and one-line errors; ``isolation``: the per-integration reading for Dagster
- ``credentials``: secrets, keys and certificates as the source clients take them (imported on
  its own: the rest of the configuration does not know the clients)
"""

from entra_pipeline.config.common import (CONFIG_PATH_ENV, DEFAULT_CONFIG_PATH, PROJECT_ROOT, ConfigError,
                                          DemoTenant)
from entra_pipeline.config.directory import ContactsDirectory, Precedence
from entra_pipeline.config.entra import CLOUDS, EntraSource
from entra_pipeline.config.isolation import BrokenIntegration, LoadedIntegrations, load_for_dagster, parse_for_dagster
from entra_pipeline.config.lists import CustomList, GeneratedLists, ListSelection, read_bulk_selector
from entra_pipeline.config.loader import config_path, load_integrations, parse_integrations
from entra_pipeline.config.models import (DeletionGuard, EntraIntegration, Integration, IntegrationsFile,
                                          RunSettings, Schedule, WorkdayIntegration)
from entra_pipeline.config.rules import RESERVED_COLUMNS, SKIP, Condition, CustomField, ExclusionRule, Exclusions, Mapping
from entra_pipeline.config.workday import WorkdaySource

__all__ = [
    "CLOUDS", "CONFIG_PATH_ENV", "DEFAULT_CONFIG_PATH", "PROJECT_ROOT", "RESERVED_COLUMNS", "SKIP",
    "BrokenIntegration", "Condition", "ConfigError", "ContactsDirectory", "CustomField", "CustomList", "DeletionGuard", "DemoTenant",
    "EntraIntegration", "EntraSource", "ExclusionRule", "Exclusions", "GeneratedLists", "Integration",
    "IntegrationsFile", "ListSelection", "LoadedIntegrations", "Mapping", "Precedence", "RunSettings", "Schedule",
    "WorkdayIntegration", "WorkdaySource",
    "config_path", "load_for_dagster", "load_integrations", "parse_for_dagster", "parse_integrations",
    "read_bulk_selector",
]
