"""Lowest layer: errors, progress reporting, small helpers with no project imports."""
