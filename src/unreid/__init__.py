"""unreid: fully-unsupervised person re-identification.

Pipeline stages live in sub-packages named after them: ``data``, ``models``,
``masks``, ``cluster``, ``losses``, ``methods``, ``engine``, ``eval``, ``viz``.
"""

__version__ = "0.1.0"
