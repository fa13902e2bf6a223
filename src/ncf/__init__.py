"""ncf: Neural Collaborative Filtering (He et al., WWW 2017) for implicit feedback.

Data flows one way through the package::

    datasets (raw files) -> interactions -> prepare -> split -> sampling
        -> models -> training -> evaluation -> recommend
"""

from __future__ import annotations

from typing import Any

from ncf.errors import DataError, NcfError

__all__ = ["DataError", "Interactions", "NcfError"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # numpy is imported on first use, not by `import ncf`: the command line starts (and can
    # report a failure to import it, e.g. under a memory limit, in one line) without it
    if name == "Interactions":
        from ncf.interactions import Interactions

        return Interactions
    raise AttributeError(f"module 'ncf' has no attribute {name!r}")
