"""genrekit: music genre classification by transfer learning (Keras 3 on TensorFlow).

Installed, the subpackages ``genrekit.data_tools``, ``genrekit.models`` and
``genrekit.evaluation`` sit inside this package. In the repository they are the top-level
folders ``data_tools/``, ``models/`` and ``evaluation/`` (setup.cfg maps them); when this
package is imported from a source checkout (``python -m pytest`` run in the repository puts
the checkout first on ``sys.path``), the checkout's root is added to this package's search
path so that the same names resolve to those folders.
"""
import os as _os

__version__ = "0.1.0"

_SUBPACKAGES = ("data_tools", "models", "evaluation")


def _source_checkout_root():
    here = _os.path.dirname(_os.path.abspath(__file__))
    if all(_os.path.isdir(_os.path.join(here, name)) for name in _SUBPACKAGES):
        return None  # installed: the subpackages are inside this folder
    root = _os.path.dirname(here)
    marker = _os.path.join(root, "setup.cfg")
    if not all(_os.path.isfile(_os.path.join(root, name, "__init__.py")) for name in _SUBPACKAGES):
        return None
    try:
        with open(marker, encoding="utf-8") as fh:
            if "genrekit.data_tools = data_tools" not in fh.read():
                return None
    except OSError:
        return None
    return root


_root = _source_checkout_root()
if _root is not None and _root not in __path__:
    __path__.append(_root)
del _root
