"""Request/response shapes of the HTTP API and the limits it enforces.

The JSON request body is parsed by hand (``app._parse_json_maps``) rather than by pydantic so that a
bad map gets the same one-line message :func:`waferscope.data.dataset.validate_map` gives on the
CLI ("map 3: die values must be 0 (no die), 1 (pass) or 2 (fail); found [7]") instead of a list of
pydantic locations; these models describe the responses and feed the OpenAPI page (``/docs``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Optional

from pydantic import BaseModel, Field


@dataclass(frozen=True)
class Limits:
    """What one request may carry. Each limit answers with a 4xx that names it and its value."""

    max_maps: int = 1024  # maps per request (one inference batch stays < ~1 s on 2 cores)
    max_side: int = 512  # rows or columns of one map (WM-811K's largest is 300×202)
    max_body_bytes: int = 32 * 1024 * 1024  # request body, JSON or upload (checked before parsing)
    max_heatmap_maps: int = 256  # maps per request with ?heatmap=1 (nested-list heat maps are large)
    max_dies: int = 16 * 1024 * 1024  # dies summed over a request's maps (1,024 maps of 128×128)
    max_echo_dies: int = 4 * 1024 * 1024  # dies echoed back per request by ?maps=1 / ?heatmap=1
    max_decompressed_bytes: int = 64 * 1024 * 1024  # an upload's bytes once inflated (npz, .gz, Parquet pages)
    request_timeout: float = 60.0  # s from the request's arrival to its answer; 503 after that
    max_queued_dies: int = 64 * 1024 * 1024  # dies waiting per model; 503 + Retry-After beyond
    max_inflight: int = 128  # POST requests being read, queued or answered at once; 503 beyond
    max_inflight_body_bytes: int = 128 * 1024 * 1024  # request bodies held at once; 503 beyond
    max_batch: int = 256  # maps per model call (1-map requests of many clients share one)
    chunk_maps: int = 64  # a large request runs in chunks of this many maps, taking turns with others
    # the page's lot browser (POST /v1/lots): a whole file held server-side and paged (serve/lotbrowser.py)
    max_file_bytes: int = 256 * 1024 * 1024  # body of one POST /v1/lots upload (instead of max_body_bytes)
    max_file_maps: int = 200_000  # wafers in one uploaded file (a day's production: 100,000 opens)
    max_file_dies: int = 256 * 1024 * 1024  # dies summed over the file's maps (~256 MB held as uint8)
    max_file_decompressed_bytes: int = 1024 * 1024 * 1024  # the file's bytes once inflated
    max_lot_sessions: int = 2  # files held at once; the oldest is dropped (and its predictions stopped)
    max_page_maps: int = 500  # wafers per page of GET /v1/lots/{id}/wafers (maps echoed: max_echo_dies too)

    def as_dict(self) -> dict:
        """Return the limits as a dict."""
        return asdict(self)


class MapsRequest(BaseModel):
    """``{"maps": [[[0,1,2,...], ...], ...], "ids": ["w1", ...]}``: die grids, 0 no die, 1 pass, 2 fail."""

    maps: List[List[List[int]]] = Field(..., description="One or many die grids (rows of die states 0/1/2)")
    ids: Optional[List[str]] = Field(None, description="One id per map (default: map-0, map-1, ...)")


class ClassifiedWafer(BaseModel):
    """One classified wafer."""

    id: str
    lot: Optional[str] = None
    class_: str = Field(..., alias="class")
    probabilities: Dict[str, float]
    open_set_score: Optional[float] = Field(None, description="With ?abstain=1: how unlike every known class "
                                            "(class is 'unknown' above the scorer's threshold)")
    heatmap: Optional[List[List[float]]] = Field(None, description="Grad-CAM on the die grid, in [0, 1]")
    map: Optional[List[List[int]]] = Field(None, description="The die grid itself (with ?maps=1)")


class ClassifyResponse(BaseModel):
    """The answer of /v1/classify."""

    model: str
    classes: List[str]
    open_set: Optional[Dict[str, object]] = Field(None, description="With ?abstain=1: the scorer's threshold and parts")
    wafers: List[ClassifiedWafer]


class ScoredWafer(BaseModel):
    """One scored wafer."""

    id: str
    lot: Optional[str] = None
    score: float
    is_anomalous: Optional[bool] = Field(None, description="score >= the run's threshold (absent without one)")
    heatmap: Optional[List[List[float]]] = Field(None, description="Anomaly map on the die grid")
    map: Optional[List[List[int]]] = None


class ScoreResponse(BaseModel):
    """The answer of /v1/score."""

    model: str
    threshold: Optional[float]
    wafers: List[ScoredWafer]


class Neighbour(BaseModel):
    """One similar archive wafer."""

    id: str = Field(..., description="The archive wafer's id")
    lot: str = Field(..., description="Its lot (empty when the archive had none)")
    class_: str = Field(..., alias="class", description="Its label in the archive (empty: unlabelled)")
    distance: float = Field(..., description="Euclidean distance in the index's embedding (smaller: more alike)")
    map: Optional[List[List[int]]] = Field(None, description="With ?maps=1: its stored thumbnail (die states, "
                                                              "the index's thumb_size squared; null without thumbnails)")


class SearchedWafer(BaseModel):
    """One query wafer and its similar archive wafers."""

    id: str
    lot: Optional[str] = None
    neighbours: List[Neighbour]


class SearchResponse(BaseModel):
    """The answer of /v1/search."""

    index: Dict[str, object] = Field(..., description="The index served: embedding, wafers, source")
    k: int
    wafers: List[SearchedWafer]


class ErrorResponse(BaseModel):
    """An error answer."""

    error: str
