"""How does it run fast? Inference backends behind one small protocol (:mod:`.base`), loaded by :mod:`.loader`."""
