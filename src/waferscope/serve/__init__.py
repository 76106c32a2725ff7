"""The HTTP service (``waferscope serve``).

:func:`create_app` builds a FastAPI app around a fitted classifier and detector; docs/serve.md
describes the endpoints, limits and errors.
"""

from waferscope.serve.app import create_app
from waferscope.serve.schemas import Limits

__all__ = ["create_app", "Limits"]
