"""Ahead-of-time build of every kernel the engine launches into per-architecture cubins."""
