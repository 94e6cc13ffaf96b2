#!/bin/sh
# What a real node of the local stack needs from Debian (bookworm), installed
# with apt-get (the machine runs as root): containerd 1.6 and runc 1.1 (the
# container runtime), the CNI plugins (bridge, host-local, portmap, loopback in
# /usr/lib/cni) and busybox-static (the one binary the pause and workload
# images are made of). `jobreaper-dev stack up --real-nodes 1` runs this only
# when one of them is missing. Nothing is started or enabled: the stack runs
# its own containerd, with its own root, state and socket.
set -eu
PACKAGES="containerd runc containernetworking-plugins busybox-static"
if [ "$(id -u)" -ne 0 ]; then
    echo "install-packages.sh: run as root (apt-get install $PACKAGES)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $PACKAGES
