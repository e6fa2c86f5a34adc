"""Tidy tables, plots and the HTML report of a study."""
