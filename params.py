"""The reference release's top-level ``params`` module; the code lives in :mod:`npc.params`.

``import params`` gives that very module (not a copy), so the release's layout keeps working.
"""
import sys

from npc import params as _module

sys.modules[__name__] = _module
