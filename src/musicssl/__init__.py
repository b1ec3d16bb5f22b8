"""musicssl: self-supervised musical key and beat estimation.

Key estimation (STONE, S-KEY) lives in :mod:`musicssl.key`, beat tracking
(Zero-Note Samba) in :mod:`musicssl.beat`, the shared audio front end in
:mod:`musicssl.frontend`, metrics and datasets in :mod:`musicssl.evaluation`,
and the command line in :mod:`musicssl.cli`.
"""

from musicssl.errors import MusicsslError
from musicssl.keys import Key

__version__ = "0.1.0"

__all__ = ["Key", "MusicsslError", "__version__"]
