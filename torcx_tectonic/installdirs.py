"""Where the bundle is installed, fixed when it is built.

``make install`` writes this module anew from its directory variables
(``LIBEXECDIR``, ``SYSTEMD_UNITDIR``, ``SYSCONFDIR``, ``DOCDIR``, ``BINDIR``),
the same values it substitutes into the shipped units, so the generated
units, the shipped units and the package always name the places the files
really went. The copy in the source tree holds the defaults. Plain strings:
the generator imports this at every boot.
"""

LIBEXEC_DIR = "/usr/libexec/torcx-tectonic"
SYSTEMD_UNIT_DIR = "/usr/lib/systemd/system"
SYSCONF_DIR = "/etc"
DOC_DIR = "/usr/share/doc/torcx-tectonic"
BIN_DIR = "/usr/bin"
