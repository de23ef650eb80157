# nestos-installer developer entry points. Run as root on Debian 12 (apt + loop devices).
SHELL := /bin/bash
PYTHON ?= /usr/bin/python3
VENV := .venv
VPY := $(VENV)/bin/python
PREFIX ?= /usr
DESTDIR ?=

# Everything the tests touch for real. Debian's python3-gpg/-systemd/-pyudev are the
# GPGME, systemd and udev bindings (the venv sees them via --system-site-packages);
# groff-base checks the man pages (a minimal Debian lacks it: priority "standard").
APT_PACKAGES := python3-venv python3-pip python3-gpg python3-systemd python3-pyudev \
	python3-yaml gnupg xorriso genisoimage cpio fdisk gdisk dosfstools e2fsprogs \
	xfsprogs zstd xz-utils util-linux udev systemd libarchive-tools curl ostree openssl \
	python3-gi gir1.2-nm-1.0 ignition tinyproxy nginx-light rpm groff-base strace
# `customize --network-nmstate` runs nmstate's Python library (PyPI nmstate 2.0.0,
# libnm through python3-gi/gir1.2-nm-1.0). Its declared `nispor` dependency has no
# build for Debian or PyPI and is not used to generate keyfiles: hence --no-deps.
NMSTATE_PIP := nmstate==2.0.0
E2E_APT_PACKAGES := qemu-system-x86 dracut-core systemd busybox-static kmod ipxe-qemu \
	nginx-light ignition isolinux syslinux-common zstd e2fsprogs xorriso cpio

.PHONY: all deps e2e-deps venv lint typecheck unit test demo e2e live-iso bench fuzz install \
	install-python install-data sdist wheel rpm clean

all: test

deps:
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "apt-get install $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $$missing >/dev/null; \
	fi

e2e-deps:
	@missing=$$(for p in $(E2E_APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $$missing >/dev/null; \
	fi

$(VENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(VPY) -m pip install -q --disable-pip-version-check -e '.[test]' \
		--config-settings editable_mode=compat
	$(VPY) -m pip install -q --disable-pip-version-check --no-deps '$(NMSTATE_PIP)'
	touch $@

venv: deps $(VENV)/.stamp

lint: venv
	$(VENV)/bin/ruff check nestos_inst tests bench

typecheck: venv
	$(VENV)/bin/mypy

unit: venv
	$(VPY) -m pytest -m "not e2e"

# The README's test command: lint, strict types, then every test but the VM boot.
test: venv
	$(VENV)/bin/ruff check nestos_inst tests bench
	$(VENV)/bin/mypy
	$(VPY) -m pytest -m "not e2e"

demo: venv
	$(VPY) -m tests.demo

# The VM scenarios (docs/e2e-harness.md); writes build/e2e-report.json.
e2e: venv e2e-deps
	$(VPY) -m pytest -m e2e tests/e2e

# Build (or reuse) the e2e live ISO and print a qemu command that boots it.
# PORT: 127.0.0.1 port the guest's http://10.0.2.100/ reaches; PROFILE=coreos.
live-iso: venv e2e-deps
	$(VPY) -m tests.e2e.live $(if $(PORT),--port $(PORT)) $(if $(PROFILE),--profile $(PROFILE))

bench: venv
	$(VPY) -m bench

# Fuzz every parser of untrusted bytes (not part of `test`; docs/fuzzing.md).
# FUZZ_COUNT inputs per target, under a FUZZ_MEM MiB address-space cap.
FUZZ_COUNT ?= 100000
FUZZ_MEM ?= 2048
FUZZ_TARGETS ?=
fuzz: venv
	mkdir -p build
	$(VPY) -m tests.fuzz --count $(FUZZ_COUNT) --mem $(FUZZ_MEM) \
		--report build/fuzz-report.jsonl $(FUZZ_TARGETS)

# Package + service mode files in the standard places, as a distribution package would.
# Every directory follows PREFIX (units and generator are rewritten to name the
# PREFIX paths); systemd also reads /usr/local/lib/systemd, but dracut only reads
# /usr/lib/dracut, so the dracut module is installed for PREFIX=/usr only.
SYSCONFDIR ?= /etc
UNITDIR ?= $(PREFIX)/lib/systemd/system
GENERATORDIR ?= $(PREFIX)/lib/systemd/system-generators
LIBEXECDIR ?= $(PREFIX)/libexec
DATADIR ?= $(PREFIX)/share
MANDIR ?= $(DATADIR)/man
DOCDIR ?= $(DATADIR)/doc/nestos-installer
DRACUTDIR := $(PREFIX)/lib/dracut/modules.d/50nestos-installer
KEYS_DIST := $(DATADIR)/nestos-installer/keys.d
KEYS_ADMIN := $(SYSCONFDIR)/nestos-installer/keys.d
# Man pages and the example config are generated from this checkout's option
# definitions, which import the runtime dependencies (pydantic): run them with the
# venv's interpreter when there is one, else PYTHON (a package build's python3, with
# the BuildRequires installed).
TOOL_PYTHON ?= $(if $(wildcard $(VPY)),$(abspath $(VPY)),$(PYTHON))
RUN_SRC := PYTHONPATH=$(CURDIR) $(TOOL_PYTHON) -m nestos_inst

# setuptools builds in the source tree (build/, *.egg-info) by default, so two builds
# from one checkout at the same time (a test's wheel, the e2e harness's staged install)
# would overwrite each other's files. Each build gets a private directory instead (a
# setup.cfg that DIST_EXTRA_CONFIG names), removed by its exact name when the build
# ends, whatever way. Prefix of a recipe line whose command runs setuptools.
define private_build
b=$$(mktemp -d "$${TMPDIR:-/tmp}/nestos-installer-build.XXXXXX") && \
	trap 'rm -rf -- "$$b"' EXIT && trap 'exit 1' HUP INT TERM && \
	printf '[build]\nbuild_base = %s/build\n[egg_info]\negg_base = %s\n' "$$b" "$$b" \
		>"$$b/setup.cfg" && \
	DIST_EXTRA_CONFIG="$$b/setup.cfg"
endef

install: install-python install-data

install-python:
	$(private_build) DEB_PYTHON_INSTALL_LAYOUT=deb_system $(PYTHON) -m pip install -q \
		--no-deps --ignore-installed --no-build-isolation --prefix=$(PREFIX) \
		--root=$(if $(DESTDIR),$(DESTDIR),/) .

# Everything but the Python package (the RPM spec calls this after %pyproject_install).
install-data:
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(GENERATORDIR) $(DESTDIR)$(LIBEXECDIR) \
		$(DESTDIR)$(DATADIR)/nestos-installer $(DESTDIR)$(DOCDIR) $(DESTDIR)$(MANDIR)/man8 \
		$(DESTDIR)$(KEYS_DIST) $(DESTDIR)$(KEYS_ADMIN)
	for f in units/*.service units/*.target; do \
		sed -e 's|/usr/libexec/|$(LIBEXECDIR)/|g' -e 's|/usr/share/doc/nestos-installer/|$(DOCDIR)/|g' \
			"$$f" > $(DESTDIR)$(UNITDIR)/$$(basename "$$f"); \
		chmod 644 $(DESTDIR)$(UNITDIR)/$$(basename "$$f"); \
	done
	sed -e 's|/usr/lib/systemd/system/|$(UNITDIR)/|g' units/nestos-installer-generator \
		> $(DESTDIR)$(GENERATORDIR)/nestos-installer-generator
	chmod 755 $(DESTDIR)$(GENERATORDIR)/nestos-installer-generator
	install -m 755 units/scripts/* $(DESTDIR)$(LIBEXECDIR)/
	if [ "$(PREFIX)" = /usr ]; then \
		install -d $(DESTDIR)$(DRACUTDIR) && \
		install -m 755 dracut/50nestos-installer/module-setup.sh \
			dracut/50nestos-installer/python-files.py $(DESTDIR)$(DRACUTDIR)/; \
	else echo "note: dracut module not installed (dracut only reads /usr/lib/dracut)"; fi
	install -m 644 docs/*.md $(DESTDIR)$(DOCDIR)/
	install -m 644 packaging/keys.d-README $(DESTDIR)$(KEYS_DIST)/README
	install -m 644 packaging/keys.d-README $(DESTDIR)$(KEYS_ADMIN)/README
	# Generated from the options table (`pack example-config`; a test keeps it in sync).
	install -m 644 data/example-config.yaml $(DESTDIR)$(DATADIR)/nestos-installer/
	$(RUN_SRC) pack man -C $(DESTDIR)$(MANDIR)/man8

# Source distribution (what a distribution builds from) and wheel, into dist/ (the
# wheel into WHEEL_DIR).
WHEEL_DIR ?= dist
sdist:
	$(PYTHON) -c 'from setuptools import build_meta as b; print(b.build_sdist("dist"))'

wheel:
	$(private_build) $(PYTHON) -m pip wheel -q --no-deps --no-build-isolation --no-index \
		-w $(WHEEL_DIR) .

# The RPM, built from the sdist with rpmbuild. Debian's rpm lacks the Fedora/openEuler
# macros (python, systemd, pyproject): packaging/rpm-debian.macros stands in for them
# there, and --nodeps because Debian's rpm database knows no BuildRequires.
RPMTOP := $(CURDIR)/build/rpm
RPM_MACROS ?= $(if $(wildcard /etc/debian_version),--load=packaging/rpm-debian.macros --nodeps,)
rpm:
	rm -rf $(RPMTOP) && mkdir -p $(RPMTOP)/SOURCES
	$(PYTHON) -c 'from setuptools import build_meta as b; b.build_sdist("$(RPMTOP)/SOURCES")' \
		>/dev/null
	rpmbuild -bb $(RPM_MACROS) --define "_topdir $(RPMTOP)" \
		--define "nestos_tool_python $(TOOL_PYTHON)" nestos-installer.spec
	@ls $(RPMTOP)/RPMS/noarch/*.rpm

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info build dist
