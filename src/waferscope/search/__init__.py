"""Similarity search over wafer maps ("find the wafers like this one", issue #31).

- :mod:`.embed` — wafer embeddings (the 120 standardised wafer features by default; the bundled
  CNN's penultimate layer; raw resized maps as the baseline)
- :mod:`.index` — :class:`WaferIndex`: a faiss HNSW index with ids, lots and classes, incremental
  add, pickle-free save/load with a version stamp
- :mod:`.montage` — the PNG of each query beside its neighbours
"""

from waferscope.search.embed import DEFAULT_EMBEDDING, EMBEDDINGS, make_embedding
from waferscope.search.index import INDEX_FORMAT, WaferIndex

__all__ = ["WaferIndex", "EMBEDDINGS", "DEFAULT_EMBEDDING", "make_embedding", "INDEX_FORMAT"]
