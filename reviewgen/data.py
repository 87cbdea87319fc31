"""`reviewgen.data` is the data pipeline, reviewgen.text.data, under its public name.

The module object itself is replaced, so `reviewgen.data.X` and
`reviewgen.text.data.X` are the same attribute (monkeypatching one patches both).
"""
import sys

from .text import data as _data

sys.modules[__name__] = _data
