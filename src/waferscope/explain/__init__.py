"""Explanations: Grad-CAM / Grad-CAM++, Grad-CAM denoising, localisation scores, defect atlas."""

from waferscope.explain.api import (Explanation, denoise, denoising_table, explain, localisation_table,
                                    overlay_figure, summarise_localisation)
from waferscope.explain.atlas import Atlas, build_atlas, plot_atlas

__all__ = ["Explanation", "explain", "denoise", "denoising_table", "localisation_table", "summarise_localisation",
           "overlay_figure", "Atlas", "build_atlas", "plot_atlas"]
