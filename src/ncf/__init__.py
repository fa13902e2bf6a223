"""ncf: Neural Collaborative Filtering (He et al., WWW 2017) for implicit feedback.

Data flows one way through the package::

    datasets (raw files) -> interactions -> prepare -> split -> sampling
        -> models -> training -> evaluation -> recommend
"""

from ncf.errors import DataError, NcfError
from ncf.interactions import Interactions

__all__ = ["DataError", "Interactions", "NcfError"]
__version__ = "0.1.0"
