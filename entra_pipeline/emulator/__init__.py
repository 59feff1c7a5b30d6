"""Demo tenant: a Microsoft Graph + identity-platform emulator with a synthetic directory.

``python -m entra_pipeline.emulator serve`` runs it standalone; tests use
:class:`Emulator` and :func:`generate_directory` directly.
"""

#: Tenant and app of the demo tenant (fixed so configuration can name them).
DEMO_TENANT_ID = "00000000-0000-0000-0000-0000000de770"
DEMO_CLIENT_ID = "00000000-0000-0000-0000-00000000c11e"
#: The demo app's secret when ``CLIENT_SECRET_ENV`` is unset. Not a secret: it guards nothing real.
DEMO_CLIENT_SECRET = "demo-client-secret"
#: Environment variable the CLI reads the client secret from (never the command line).
CLIENT_SECRET_ENV = "ENTRA_EMULATOR_CLIENT_SECRET"

from .directory import Directory  # noqa: E402
from .faults import FaultProfile  # noqa: E402
from .population import generate_directory  # noqa: E402
from .server import Emulator  # noqa: E402

__all__ = [
    "CLIENT_SECRET_ENV",
    "DEMO_CLIENT_ID",
    "DEMO_CLIENT_SECRET",
    "DEMO_TENANT_ID",
    "Directory",
    "Emulator",
    "FaultProfile",
    "generate_directory",
]
