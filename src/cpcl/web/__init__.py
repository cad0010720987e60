"""The search web page and JSON API (`cpcl serve`). Imports the index layer only, never the training engine."""
