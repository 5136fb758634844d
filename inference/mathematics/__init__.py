"""The linear-Gaussian mathematics: marginal likelihoods, posterior moments, the joint density and
its collapse path, the ridge path, optimiser helpers. NumPy and SciPy only: no PyMC, no I/O, no
printing; the data arrive as sufficient statistics (``hyperbayes.models``)."""
