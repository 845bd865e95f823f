"""The reference release's top-level ``data`` module; the code lives in :mod:`npc.data`.

``import data`` gives that very module (not a copy), so the release's layout keeps working.
"""
import sys

from npc import data as _module

sys.modules[__name__] = _module
