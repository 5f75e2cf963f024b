"""What the store commands (`dbguard journal …`, `dbguard approvals …`) share: which store they
read and with which chain key.

Owns: `--store URL` or the configuration's `store:`, the chain key from `journal.hmac_key` or
`$DBGUARD_JOURNAL_KEY`, and the usage error both command groups print with exit status 2.
Must not open the store (each command group opens what it needs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from dbguard.config import Config, load_config, parse_store_url, resolve_config_path

__all__ = ["KEY_ENV_VAR", "StoreTarget", "UsageError", "store_target"]

KEY_ENV_VAR: Final = "DBGUARD_JOURNAL_KEY"


class UsageError(Exception):
    """Bad arguments, configuration or store: printed on stderr, exit status 2."""


@dataclass(frozen=True)
class StoreTarget:
    url: str  # with its password, for the driver
    label: str  # redacted, for people
    key: bytes | None
    config: Config | None  # None when --store was given and no configuration was needed


def store_target(config_path: str | None, store_url: str | None, *, need_config: bool = False) -> StoreTarget:
    """The store of `--store` (else of the configuration) and the chain key: the
    configuration's `journal.hmac_key` when a configuration is read, else `$DBGUARD_JOURNAL_KEY`."""
    config: Config | None = None
    if need_config or store_url is None:
        config = load_config(resolve_config_path(config_path))
    if store_url is not None:
        try:
            store = parse_store_url(store_url, Path.cwd())
        except ValueError as e:
            raise UsageError(f"--store: {e}") from None
    else:
        assert config is not None
        store = config.store
    key: bytes | None = None
    if config is not None and config.journal.hmac_key is not None:
        key = config.journal.hmac_key.reveal().encode()
    elif env_key := os.environ.get(KEY_ENV_VAR):
        key = env_key.encode()
    url = store.dsn.url() if store.dsn is not None else store.url
    return StoreTarget(url, store.redacted(), key, config)
