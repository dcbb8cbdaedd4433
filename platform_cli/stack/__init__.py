"""The stack: the same services as local processes or compose containers, behind one
interface (`Stack`, base.py); `open_stack` picks the one a command addresses."""

from platform_cli.stack.base import SERVICES, ServiceDef, ServiceStatus, Stack, UpOptions
from platform_cli.stack.mode import active_mode, open_stack, resolve_up_mode

__all__ = [
    "SERVICES",
    "ServiceDef",
    "ServiceStatus",
    "Stack",
    "UpOptions",
    "active_mode",
    "open_stack",
    "resolve_up_mode",
]
