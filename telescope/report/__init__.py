"""Plots and the Markdown report of a finished sweep (`telescope plot`, `telescope report`)."""

from telescope.report.data import SweepData, figure_data, load_sweep
from telescope.report.markdown import write_report
from telescope.report.plots import FIGURES, draw_figures, plot_sweep

__all__ = ["FIGURES", "SweepData", "draw_figures", "figure_data", "load_sweep", "plot_sweep", "write_report"]
