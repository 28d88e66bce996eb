"""Token importance beyond the buffer method: which tokens of a text matter for a classifier's decision.

    attribution  the methods' registry (``METHODS``): the buffer method of :mod:`tmlib.selective.buffer`,
                 leave-one-out occlusion, gradient x input, integrated gradients (captum); their agreement

Every method returns one :class:`~tmlib.selective.types.TokenScores` per text, at the WordPiece level.
"""
