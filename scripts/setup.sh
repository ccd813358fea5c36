#!/usr/bin/env bash
# Installs what fastpath, its demo and its tests need on a fresh Debian 12 machine (as root),
# then builds the Cython extensions once, in place. Safe to run again.
#
# Python packages go into the interpreter that runs this script's `python3` (or $PYTHON): the
# active virtual environment if there is one, else the system's. Every Debian package that a
# test or the demo runs is named here, so a machine that happens to have it proves nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

need=()     # with recommends
vm=()       # without recommends: QEMU, the guest kernel and DPDK pull in a lot otherwise
have() { command -v "$1" >/dev/null 2>&1; }
# command:package pairs, each a tool the package, its demo, its tests or its benchmarks run
for cmd in ip:iproute2 ethtool:ethtool tcpdump:tcpdump gcc:gcc taskset:util-linux \
           stdbuf:coreutils pkg-config:pkgconf iperf3:iperf3 ping:iputils-ping \
           ovs-vswitchd:openvswitch-switch ovsdb-tool:openvswitch-common; do
    have "${cmd%%:*}" || need+=("${cmd##*:}")
done
[ -f /usr/include/openssl/evp.h ] || need+=(libssl-dev)
# ESP's fast AES-GCM engine: intel-ipsec-mb (the header to build, the library to run; without
# the library at run time fastpath falls back to OpenSSL)
[ -f /usr/include/intel-ipsec-mb.h ] || need+=(libipsec-mb-dev)
ls /usr/lib/*/libIPSec_MB.so.1 >/dev/null 2>&1 || need+=(libipsec-mb1)
# Python itself: pip, venv and the headers the extensions compile against (Debian's python3
# ships without them; a pyenv or venv interpreter has them already)
"$PY" -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
"$PY" -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
inc=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null || true)
[ -n "$inc" ] && [ -f "$inc/Python.h" ] || need+=(python3-dev)
# the vhost-user tests boot a tiny guest under QEMU: QEMU, a kernel image and its modules,
# kmod's modprobe (module dependencies), a static busybox
for cmd in qemu-system-x86_64:qemu-system-x86 modprobe:kmod; do
    have "${cmd%%:*}" || vm+=("${cmd##*:}")
done
ls /boot/vmlinuz-* >/dev/null 2>&1 || vm+=(linux-image-amd64)
{ [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; } || vm+=(busybox-static)
# the memif tests use DPDK's testpmd as a peer: dpdk-testpmd (dpdk-dev) and the memif
# driver it loads (librte-net-memif23)
have dpdk-testpmd || vm+=(dpdk-dev)
ls /usr/lib/*/dpdk/pmds-*/librte_net_memif.so* >/dev/null 2>&1 || vm+=(librte-net-memif23)
# the IKEv2 tests run strongSwan (charon + swanctl) inside a guest as fastpath's peer
swan=()
[ -x /usr/lib/ipsec/charon ] || swan+=(strongswan-charon)
have swanctl || swan+=(strongswan-swanctl)
[ -f /usr/lib/ipsec/plugins/libstrongswan-openssl.so ] || swan+=(libstrongswan-standard-plugins)
if [ ${#need[@]} -gt 0 ] || [ ${#vm[@]} -gt 0 ] || [ ${#swan[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    [ ${#need[@]} -eq 0 ] || apt-get install -y -qq "${need[@]}" >/dev/null
    [ ${#vm[@]} -eq 0 ] || apt-get install -y -qq --no-install-recommends "${vm[@]}" >/dev/null
    if [ ${#swan[@]} -gt 0 ]; then
        # a policy-rc.d that says 101 keeps apt from starting charon on this host; removed after
        rcd=/usr/sbin/policy-rc.d
        [ -e "$rcd" ] && rcd_saved=$(mktemp) && cp -p "$rcd" "$rcd_saved"
        printf '#!/bin/sh\nexit 101\n' > "$rcd" && chmod 755 "$rcd"
        rc=0; apt-get install -y -qq --no-install-recommends "${swan[@]}" >/dev/null || rc=$?
        if [ -n "${rcd_saved:-}" ]; then mv "$rcd_saved" "$rcd"; else rm -f "$rcd"; fi
        [ $rc -eq 0 ] || exit $rc
    fi
fi

export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
# pip's default build isolation compiles in a throwaway environment, and `setup.py` run later
# by hand would find no Cython. Install the build requirements (pyproject's build-system) into
# this interpreter instead and build without isolation: the editable install then compiles
# every extension once, in place, which serves both `fastpath` and `python3 -m fastpath...`.
"$PY" -m pip install -q 'setuptools>=64' wheel 'Cython>=3.0' 'numpy>=1.24'
"$PY" -m pip install -q --no-build-isolation -e '.[test,bench]'
# prove it: every .pyx has its module next to it, importable by this interpreter
"$PY" - <<'PYEOF'
import glob, importlib, sys
missing = []
for pyx in sorted(glob.glob("fastpath/**/*.pyx", recursive=True)):
    name = pyx[:-4].replace("/", ".")
    try:
        importlib.import_module(name)
    except ImportError as e:
        missing.append(f"{name}: {e}")
if missing:
    sys.exit("setup.sh: extensions did not build:\n  " + "\n  ".join(missing))
PYEOF

# Faucet, for tests/test_faucet.py: in a virtual environment of its own (it pins os-ken,
# eventlet and prometheus_client versions that would clash with ours), made once; the test
# finds it at $FAUCET_VENV or /opt/faucet-venv. pytricia, one of its dependencies, compiles
# against the Python headers checked for above. The os-ken it brings (osken-manager, and
# os_ken/tests/switch/: the switch tester and its cases) also runs
# tests/test_osken_switch.py and tests/test_osken_learning_switch.py, with Open vSwitch
# (above) as the tester switch.
FAUCET_VENV=${FAUCET_VENV:-/opt/faucet-venv}
if ! [ -x "$FAUCET_VENV/bin/faucet" ]; then
    "$PY" -m venv --clear "$FAUCET_VENV"
    "$FAUCET_VENV/bin/pip" install -q 'faucet==1.10.12'
fi
