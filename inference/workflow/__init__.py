"""The front doors: the method registry, ``fit`` and ``compare``, evidence tables, run
directories, figures and the HTML report, the demo and the ``hyperbayes`` command."""
