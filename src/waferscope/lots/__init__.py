"""Lot analytics: the views a yield engineer opens every morning, from a WaferDataset.

- :mod:`.analysis` — pure functions returning DataFrames/arrays: :func:`lot_summary` (wafers,
  dies, yield, fails, class mix, anomalous share per lot), :func:`lot_stacks` (stacked lot maps:
  per-die fail frequency across a lot's wafers), :func:`zone_yield` (rings, quadrants, edge band),
  :func:`bin_pareto` (when the data carries bins), :func:`signature_trend` (class shares per lot in
  time order with p-chart limits) and :func:`analyse` (all of them);
- :mod:`.geometry` — die area, wafer alignment and zone rules;
- :mod:`.predict` — per-wafer class / anomaly score from a classifier and a detector;
- :mod:`.report` — PNG figures, CSV tables and the HTML page (``waferscope lots``).

docs/lots.md defines every number.
"""

from waferscope.lots.analysis import (BIN_NAMES_ATTR, BINS_ATTR, NO_BIN, TIME_COLUMNS, LotReport, LotStack,
                                      analyse, bin_pareto, lot_order, lot_stacks, lot_summary, p_chart,
                                      signature_trend, stack_maps, wafer_table, zone_yield)
from waferscope.lots.geometry import ORIGIN_COLUMNS, QUADRANTS, zone_masks
from waferscope.lots.predict import predict_wafers

__all__ = ["BIN_NAMES_ATTR", "BINS_ATTR", "NO_BIN", "ORIGIN_COLUMNS", "QUADRANTS", "TIME_COLUMNS", "LotReport",
           "LotStack", "analyse", "bin_pareto", "lot_order", "lot_stacks", "lot_summary", "p_chart",
           "predict_wafers", "signature_trend", "stack_maps", "wafer_table", "zone_masks", "zone_yield"]
