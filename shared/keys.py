"""Where a process that is not the control plane finds the data-plane key: ``MESH_DATAPLANE_KEY``
in its environment, else the key file it was told about (``mesh up`` passes
``<data dir>/dataplane.key``). The data plane opens connection credentials and checks snapshots
with it; the bridge checks snapshots with it. The master key is never read here.

Free of mitmproxy and of the SDK: the bridge imports it and runs neither.
"""

from __future__ import annotations

import os
from pathlib import Path

from shared.envelope import Keyring, KeyFormatError, parse_key

DATAPLANE_KEY_ENV = "MESH_DATAPLANE_KEY"


def load_dataplane_keyring(path: str) -> Keyring | None:
    """``MESH_DATAPLANE_KEY`` if set, else the key file at ``path``; ``None`` when neither is given.
    Raises ``KeyFormatError`` (never showing the key) for a key that cannot be used."""
    text, source = os.environ.get(DATAPLANE_KEY_ENV), DATAPLANE_KEY_ENV
    if not text:
        if not path:
            return None
        try:
            text, source = Path(path).read_text(), path
        except OSError as error:
            raise KeyFormatError(f"cannot read the data-plane key file {path} ({error.strerror})") from None
    return Keyring.single(parse_key(text, f"the data-plane key ({source})"))
