"""A third loyalty platform, "Stamps Club", defined only here: proof that a platform is a backend class plus its
registration (docs/adding-platforms.md). ``backend.py`` is the platform client; ``fake.py`` is the platform's fake
half, mounted with ``responses``. Nothing in the package knows it.
"""
