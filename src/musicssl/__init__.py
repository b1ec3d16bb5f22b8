"""musicssl: self-supervised musical key and beat estimation.

Key estimation (STONE, S-KEY) lives in :mod:`musicssl.key`, beat tracking
(Zero-Note Samba) in :mod:`musicssl.beat`, shared audio and file plumbing in
:mod:`musicssl.io`, the CQT in :mod:`musicssl.dsp`, metrics and datasets in
:mod:`musicssl.evaluation`, and the command line in :mod:`musicssl.cli`
(docs/ARCHITECTURE.md).
"""

from musicssl.errors import MusicsslError
from musicssl.keys import Key

__version__ = "0.1.0"

__all__ = ["Key", "MusicsslError", "__version__"]
