"""The core's configuration, built once from flags, then environment, then defaults."""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8700
ADMIN_TOKEN_ENV: Final = "CORE_ADMIN_TOKEN"
JOBS_INTERVAL_S: Final = 60.0
MAX_BODY_BYTES: Final = 16 * 1024 * 1024


class CoreConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    data: str
    admin_token: Annotated[str, msgspec.Meta(min_length=8)]
    host: str = DEFAULT_HOST
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = DEFAULT_PORT
    reminder_days: Annotated[int, msgspec.Meta(ge=1, le=365)] = 10
    """Invoice orders: days before the first reminder, and between reminders."""
    reminders: Annotated[int, msgspec.Meta(ge=0, le=20)] = 2
    jobs_interval_s: Annotated[float, msgspec.Meta(ge=0)] = JOBS_INTERVAL_S
    """How often the server runs the deadline job; 0 disables it (tests, or a cron)."""
