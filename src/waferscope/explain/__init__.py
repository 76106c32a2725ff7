"""Explanations: Grad-CAM / Grad-CAM++, Grad-CAM denoising, localisation scores, defect atlas."""

from waferscope.explain.api import (Explanation, denoise, denoising_table, explain, localisation_table,
                                    overlay_figure, picture_sample, summarise_localisation)
from waferscope.explain.atlas import Atlas, build_atlas, plot_atlas

__all__ = ["Explanation", "explain", "denoise", "denoising_table", "localisation_table", "summarise_localisation",
           "overlay_figure", "picture_sample", "Atlas", "build_atlas", "plot_atlas"]
