"""Step types usable in recipes; every module here registers its steps on import.

See :mod:`thresher.selection.registry` for the contract. Modules must import heavy libraries lazily.
"""
