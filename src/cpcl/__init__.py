"""cpcl: weakly supervised text-based person search (Cross-Modal Prototypical Contrastive Learning)."""

__version__ = "0.1.0"
