"""The benchmark scripts.

They run as ``python bench/<name>.py`` and import their shared modules (``_common``,
``faq_corpus``) as top-level modules; imported as ``bench.<name>`` they find them too.
"""

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.append(_HERE)
