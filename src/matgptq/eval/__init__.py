"""Perplexity (METHOD §6) and plots of perplexity against bits per weight."""

from .perplexity import perplexity, windows

__all__ = ["perplexity", "windows"]
