"""The composition: the ASGI app wired from settings, the ``pacsfed`` command line and the demo."""
