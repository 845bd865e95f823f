"""Code the studies in bench/ share that is no part of the library: imported as ``studylib`` (``python
bench/<script>.py`` puts bench/ on ``sys.path``; the tests add it through pytest's ``pythonpath``)."""
