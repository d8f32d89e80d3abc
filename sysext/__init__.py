"""The system extension image: torcx-tectonic for nodes without Python.

``launcher`` is the one frozen program of the image (every entry point is a
symlink to it); ``build`` freezes it with PyInstaller, lays out the image's
``/usr`` tree and packs it with ``mksquashfs`` (``make sysext``).
"""
