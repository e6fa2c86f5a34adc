"""Text sources and calibration sampling."""

from prunebench.data.calibration import calibration_samples, load_samples, save_samples, tokenize
from prunebench.data.text import HUB_SOURCES, load_text

__all__ = ["HUB_SOURCES", "calibration_samples", "load_samples", "load_text", "save_samples", "tokenize"]
