#!/usr/bin/env bash
# Installs what fastpath, its demo and its tests need on a fresh Debian 12 machine (as root),
# then builds the Cython extensions. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for cmd in ip:iproute2 ethtool:ethtool tcpdump:tcpdump gcc:gcc ovs-vswitchd:openvswitch-switch; do
    command -v "${cmd%%:*}" >/dev/null 2>&1 || need+=("${cmd##*:}")
done
for hdr in openssl/evp.h:libssl-dev; do
    [ -f "/usr/include/${hdr%%:*}" ] || need+=("${hdr##*:}")
done
# the vhost-user tests boot a tiny guest under QEMU: QEMU, a kernel image and its modules,
# kmod's modprobe (module dependencies), a static busybox; without recommends (~86 MB)
vm=()
for cmd in qemu-system-x86_64:qemu-system-x86 modprobe:kmod; do
    command -v "${cmd%%:*}" >/dev/null 2>&1 || vm+=("${cmd##*:}")
done
ls /boot/vmlinuz-* >/dev/null 2>&1 || vm+=(linux-image-amd64)
{ [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; } || vm+=(busybox-static)
# the memif tests use DPDK's testpmd as a peer: dpdk-testpmd (dpdk-dev) and the memif
# driver it loads (librte-net-memif23); also without recommends (~100 MB)
command -v dpdk-testpmd >/dev/null 2>&1 || vm+=(dpdk-dev)
ls /usr/lib/*/dpdk/pmds-*/librte_net_memif.so* >/dev/null 2>&1 || vm+=(librte-net-memif23)
if [ ${#need[@]} -gt 0 ] || [ ${#vm[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    [ ${#need[@]} -eq 0 ] || apt-get install -y -qq "${need[@]}" >/dev/null
    [ ${#vm[@]} -eq 0 ] || apt-get install -y -qq --no-install-recommends "${vm[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
"$PY" -m pip install -q -e '.[test,bench]'
# the editable install builds the extensions in its own tree; make sure the in-place
# modules exist too, so `python -m fastpath...` from this checkout works
"$PY" setup.py -q build_ext --inplace >/dev/null
