"""Configs as Python: ``base.py`` (shared defaults), ``models.py`` (one function per model), one file per task."""
