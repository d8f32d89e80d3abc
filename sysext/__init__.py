"""The system extension image: torcx-tectonic for nodes without Python.

``build`` lays out a program that brings its own interpreter, C library and
every shared library it loads (so it needs nothing of the node but the
kernel), the image's ``/usr`` tree around it, and packs it with
``mksquashfs`` (``make sysext``).
"""
